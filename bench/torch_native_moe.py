#!/usr/bin/env python3
# torch_native_moe.py: the PyTorch-native baseline that foldtron's LibTorch trainer is measured
# against on one GPU. It implements a Llama/Mixtral-style decoder (pre-norm RMSNorm, GQA attention
# with rotary embeddings through SDPA, dropless top-k MoE with SwiGLU experts on torch._grouped_mm,
# an optional Qwen2-MoE shared expert) and times whole training steps: forward, backward, clip,
# fused AdamW. FLOPs are counted as Megatron-Core counts them, so the MFU matches foldtron's report.
# Defaults: Mixtral-8x7B truncated to 4 layers. Data (--data): "fixed", one batch of random token
# ids reused for every micro-batch of every step, so a falling loss shows that the step trains (the
# model learns it by heart within 15 steps: its loss falls below 0.01); "fresh", new random token
# ids for every micro-batch, as foldtron's data.mock gives, whose loss stays near ln(vocab).
# Tensor-core clocks can depend on the values; on an H200 the two took the same time (1.2855 and
# 1.2868 s a step, docs/performance.md, 2026-12-03).
#
# Run:  python3 bench/torch_native_moe.py              # eager
#       python3 bench/torch_native_moe.py --compile    # torch.compile(model)
#       ... --profile-step 13 --profile-file t.json   # that step traced, for bench/trace_summary.py
# The last line is `RESULT {json}`: grep '^RESULT ' | cut -c8-
import argparse
import json
import statistics
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

EPS = 1e-5
USE_GROUPED_MM = True  # cleared by probe_grouped_mm() when torch._grouped_mm is unusable


def parse_args():
    p = argparse.ArgumentParser(description="PyTorch-native MoE training-step benchmark")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=4096)
    p.add_argument("--heads", type=int, default=32)
    p.add_argument("--kv-heads", type=int, default=8)
    p.add_argument("--ffn", type=int, default=14336, help="expert FFN size")
    p.add_argument("--experts", type=int, default=8)
    p.add_argument("--topk", type=int, default=2)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--seq", type=int, default=4096)
    p.add_argument("--micro-batch", type=int, default=2)
    p.add_argument("--accum", type=int, default=1,
                   help="micro-batches per step: their bf16 gradients add up before one AdamW step")
    p.add_argument("--steps", type=int, default=15)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--rope-theta", type=float, default=1e6)
    p.add_argument("--shared-ffn", type=int, default=0, help="shared expert FFN size (0: none)")
    p.add_argument("--no-renorm", action="store_true", help="keep raw top-k weights (Qwen2-MoE)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--peak-tflops", type=float, default=989.0)
    p.add_argument("--aux-coeff", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", choices=["fixed", "fresh"], default="fixed",
                   help="fixed: one batch for every micro-batch; fresh: new random ids for each "
                        "(as foldtron's mock data)")
    p.add_argument("--profile-step", type=int, default=0,
                   help="trace this step (1-based) with torch.profiler, as foldtron's logging.profile_step does")
    p.add_argument("--profile-file", default="torch_native_trace.json",
                   help="where the traced step's Chrome trace goes (bench/trace_summary.py reads it)")
    a = p.parse_args()
    if a.compile:
        a.warmup = max(a.warmup, 5)  # the first compiled steps include compilation
    problems = []
    if a.hidden % a.heads:
        problems.append(f"hidden ({a.hidden}) must be a multiple of heads ({a.heads})")
    elif (a.hidden // a.heads) % 2:
        problems.append(f"head_dim ({a.hidden // a.heads}) must be even for rotary embeddings")
    if a.heads % a.kv_heads:
        problems.append(f"heads ({a.heads}) must be a multiple of kv-heads ({a.kv_heads})")
    if not 0 <= a.profile_step <= a.steps:
        problems.append(f"profile-step ({a.profile_step}) must be a step, 1 to steps ({a.steps}), or 0 for none")
    if not 1 <= a.topk <= a.experts:
        problems.append(f"topk ({a.topk}) must be in [1, experts ({a.experts})]")
    if a.steps <= a.warmup:
        problems.append(f"steps ({a.steps}) must exceed warmup ({a.warmup})")
    elif a.steps == a.warmup + 1 and a.profile_step == a.steps:
        problems.append(f"profile-step ({a.profile_step}) is the only step after the warm-up: the median leaves "
                        "the traced step out, so raise --steps")
    if problems:
        sys.exit("[config] error:\n  " + "\n  ".join(problems))
    return a


def mat(*shape):  # a bf16 matrix parameter on the GPU, normal(0, 0.02)
    return nn.Parameter(torch.empty(*shape, device="cuda", dtype=torch.bfloat16).normal_(0.0, 0.02))


def norm_weight(n):  # [n] ones
    return nn.Parameter(torch.ones(n, device="cuda", dtype=torch.bfloat16))


def rotate_half(x):  # [..., d] -> [..., d]: (x1, x2) -> (-x2, x1)
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class Attention(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = a.heads, a.kv_heads, a.hidden // a.heads
        self.wq = mat(a.heads * self.head_dim, a.hidden)     # [a*d, h]
        self.wk = mat(a.kv_heads * self.head_dim, a.hidden)  # [n_g*d, h]
        self.wv = mat(a.kv_heads * self.head_dim, a.hidden)  # [n_g*d, h]
        self.wo = mat(a.hidden, a.heads * self.head_dim)     # [h, a*d]

    def forward(self, x, cos, sin):  # x [b, s, h]; cos, sin [s, d]
        b, s, _ = x.shape
        q = F.linear(x, self.wq).view(b, s, self.heads, self.head_dim).transpose(1, 2)     # [b, a, s, d]
        k = F.linear(x, self.wk).view(b, s, self.kv_heads, self.head_dim).transpose(1, 2)  # [b, n_g, s, d]
        v = F.linear(x, self.wv).view(b, s, self.kv_heads, self.head_dim).transpose(1, 2)  # [b, n_g, s, d]
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)  # [b, a, s, d]
        return F.linear(o.transpose(1, 2).reshape(b, s, -1), self.wo)  # [b, s, h]


class MoE(nn.Module):
    """route -> permute (sort by expert) -> grouped SwiGLU experts -> weight and combine."""

    def __init__(self, a):
        super().__init__()
        self.experts, self.topk, self.ffn = a.experts, a.topk, a.ffn
        self.renorm, self.aux_coeff, self.shared_ffn = not a.no_renorm, a.aux_coeff, a.shared_ffn
        self.router = mat(a.experts, a.hidden)             # [E, h]
        self.gate_up = mat(a.experts, 2 * a.ffn, a.hidden)  # [E, 2F, h]: rows [0, F) gate, [F, 2F) up
        self.down = mat(a.experts, a.hidden, a.ffn)         # [E, h, F]
        if a.shared_ffn > 0:
            self.shared_gate = mat(a.shared_ffn, a.hidden)  # [Fs, h]
            self.shared_up = mat(a.shared_ffn, a.hidden)    # [Fs, h]
            self.shared_down = mat(a.hidden, a.shared_ffn)  # [h, Fs]
            self.shared_score = mat(1, a.hidden)            # [1, h]

    def expert_loop(self, x_sorted, counts):  # fallback without torch._grouped_mm; syncs the host
        outs, start = [], 0
        for e, n in enumerate(counts.tolist()):
            h1 = F.linear(x_sorted.narrow(0, start, n), self.gate_up[e])  # [n, 2F]
            act = F.silu(h1[:, :self.ffn]) * h1[:, self.ffn:]              # [n, F]
            outs.append(F.linear(act, self.down[e]))                       # [n, h]
            start += n
        return torch.cat(outs)  # [T*k, h]

    def forward(self, x):  # x [T, h] -> y [T, h], aux [] fp32
        T, E, k = x.shape[0], self.experts, self.topk
        probs = (x.float() @ self.router.float().t()).softmax(dim=-1)  # [T, E] fp32
        top_p, top_e = probs.topk(k, dim=-1)                            # [T, k]
        if self.renorm:
            top_p = top_p / top_p.sum(dim=-1, keepdim=True)
        flat_e = top_e.reshape(-1)  # [T*k] expert of each (token, slot) pair
        # Counts by scatter_add_, not torch.bincount: on CUDA bincount reads max()/min() back to the
        # host to size its output, a sync on every layer. This path has no host sync.
        counts = torch.zeros(E, dtype=torch.long, device=x.device)
        counts.scatter_add_(0, flat_e, torch.ones_like(flat_e))  # [E]
        # Switch load-balancing loss, as Megatron-Core: E * coeff / (k * T^2) * sum_e P_e * n_e.
        aux = (E * self.aux_coeff / (k * T * T)) * (probs.sum(dim=0) * counts.float()).sum()
        order = torch.argsort(flat_e, stable=True)  # [T*k] pair ids sorted by expert
        token = order // k                          # [T*k] token of each sorted pair
        x_sorted = x.index_select(0, token)         # [T*k, h]
        if USE_GROUPED_MM:
            offs = counts.cumsum(0).to(torch.int32)  # [E] end row of each expert's group
            h1 = torch._grouped_mm(x_sorted, self.gate_up.transpose(1, 2), offs=offs)  # [T*k, 2F]
            act = F.silu(h1[:, :self.ffn]) * h1[:, self.ffn:]                          # [T*k, F]
            y_sorted = torch._grouped_mm(act, self.down.transpose(1, 2), offs=offs)    # [T*k, h]
        else:
            y_sorted = self.expert_loop(x_sorted, counts)  # [T*k, h]
        w_sorted = top_p.reshape(-1).index_select(0, order).to(y_sorted.dtype)  # [T*k]
        y = torch.zeros_like(x).index_add_(0, token, y_sorted * w_sorted.unsqueeze(1))  # [T, h]
        if self.shared_ffn > 0:
            shared = F.linear(F.silu(F.linear(x, self.shared_gate)) * F.linear(x, self.shared_up),
                              self.shared_down)                              # [T, h]
            y = y + torch.sigmoid(F.linear(x, self.shared_score)) * shared  # [T, 1] * [T, h]
        return y, aux


class Block(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.attn_norm, self.moe_norm = norm_weight(a.hidden), norm_weight(a.hidden)  # [h]
        self.attn, self.moe = Attention(a), MoE(a)

    def forward(self, x, cos, sin):  # x [b, s, h]
        h = x.shape[-1]
        x = x + self.attn(F.rms_norm(x, (h,), self.attn_norm, EPS), cos, sin)
        y, aux = self.moe(F.rms_norm(x, (h,), self.moe_norm, EPS).reshape(-1, h))  # [b*s, h]
        return x + y.view_as(x), aux


class Model(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.embed = mat(a.vocab, a.hidden)  # [V, h]
        self.layers = nn.ModuleList(Block(a) for _ in range(a.layers))
        self.final_norm = norm_weight(a.hidden)  # [h]
        self.output = mat(a.vocab, a.hidden)     # [V, h], untied
        d = a.hidden // a.heads
        half = torch.arange(0, d, 2, device="cuda", dtype=torch.float32) / d  # [d/2]
        inv_freq = 1.0 / (a.rope_theta ** half)                              # [d/2]
        pos = torch.arange(a.seq, device="cuda", dtype=torch.float32)  # [s]
        angles = torch.outer(pos, inv_freq).repeat(1, 2)               # [s, d] fp32
        self.register_buffer("cos", angles.cos().to(torch.bfloat16), persistent=False)  # [s, d]
        self.register_buffer("sin", angles.sin().to(torch.bfloat16), persistent=False)  # [s, d]

    def forward(self, ids, targets):  # ids, targets [b, s] -> lm loss [], aux loss [] (fp32)
        x = F.embedding(ids, self.embed)  # [b, s, h]
        aux = torch.zeros((), device=x.device, dtype=torch.float32)
        for layer in self.layers:
            x, layer_aux = layer(x, self.cos, self.sin)
            aux = aux + layer_aux
        x = F.rms_norm(x, (x.shape[-1],), self.final_norm, EPS)
        logits = F.linear(x, self.output)  # [b, s, V]
        lm = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1))
        return lm, aux


def probe_grouped_mm():
    """Try a small torch._grouped_mm forward and backward; on failure use the per-expert loop."""
    global USE_GROUPED_MM
    try:
        a = torch.randn(64, 128, device="cuda", dtype=torch.bfloat16, requires_grad=True)     # [M, K]
        b = torch.randn(4, 256, 128, device="cuda", dtype=torch.bfloat16, requires_grad=True)  # [G, N, K]
        offs = torch.tensor([16, 16, 40, 64], device="cuda", dtype=torch.int32)
        torch._grouped_mm(a, b.transpose(1, 2), offs=offs).float().sum().backward()
        torch.cuda.synchronize()
    except Exception as e:  # noqa: BLE001 (any failure means: do not use it)
        USE_GROUPED_MM = False
        print(f"[warn] torch._grouped_mm unusable ({type(e).__name__}: {e}); "
              "falling back to a per-expert loop, which syncs the host every layer", flush=True)


def megatron_flops(a):
    """Training FLOPs per step as Megatron-Core counts them (fwd + bwd, all layers MoE)."""
    B, s, L, h, V, g = a.micro_batch, a.seq, a.layers, a.hidden, a.vocab, 1.5
    q = (a.hidden // a.heads) * a.heads / h
    mlp = 12 * B * s * L * h * (a.ffn * a.topk * g + a.shared_ffn * g)
    attn = 12 * B * s * L * h * h * q * (1 + a.kv_heads / a.heads + s / (2 * h))
    logit = 6 * B * s * h * V
    return mlp + attn + logit


def train_step(model_fwd, params, opt, batch, accum):
    """One step over `accum` micro-batches, each batch() = (inputs, targets)."""
    opt.zero_grad(set_to_none=True)
    for _ in range(accum):
        ids, targets = batch()
        lm, aux = model_fwd(ids, targets)
        ((lm + aux) / accum).backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=True)
    opt.step()
    return lm.detach(), aux.detach()


def main():
    a = parse_args()
    if not torch.cuda.is_available():
        sys.exit("[error] CUDA is not available: this benchmark needs an NVIDIA GPU")
    impl = "torch-compile" if a.compile else "torch-eager"
    print(f"[config] impl={impl} " + " ".join(f"{k}={v}" for k, v in vars(a).items()), flush=True)
    print(f"[env] torch {torch.__version__} cuda {torch.version.cuda} on {torch.cuda.get_device_name()}")
    torch.manual_seed(a.seed)
    probe_grouped_mm()

    model = Model(a)
    params = list(model.parameters())
    print(f"[model] {sum(p.numel() for p in params) / 1e9:.3f} B parameters (bf16)", flush=True)
    model_fwd = torch.compile(model) if a.compile else model
    opt = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1, fused=True)
    def draw():
        ids = torch.randint(0, a.vocab, (a.micro_batch, a.seq + 1), device="cuda")  # [b, s+1]
        return ids[:, :-1].contiguous(), ids[:, 1:].contiguous()                     # [b, s] each

    fixed = draw()
    batch = (lambda: fixed) if a.data == "fixed" else draw

    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    times, lms = [], []
    for i in range(a.steps):
        traced = i + 1 == a.profile_step
        if traced:
            profiler = torch.profiler.profile(
                activities=[torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA])
            profiler.__enter__()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        lm, aux = train_step(model_fwd, params, opt, batch, a.accum)
        end.record()
        torch.cuda.synchronize()  # for timing only
        if traced:
            profiler.__exit__(None, None, None)
            profiler.export_chrome_trace(a.profile_file)
        times.append(start.elapsed_time(end) / 1e3)
        lms.append(lm.item())
        tag = " (warmup)" if i < a.warmup else ""
        print(f"[step] {i + 1}/{a.steps} time {times[-1] * 1e3:.1f} ms lm loss {lms[-1]:.4f} "
              f"aux loss {aux.item():.5f}{tag}", flush=True)

    # The traced step is left out: the profiler slows it (docs/performance.md leaves foldtron's out too).
    measured = [t for i, t in enumerate(times) if i >= a.warmup and i + 1 != a.profile_step]
    step_time = statistics.median(measured)
    peak_mem = torch.cuda.max_memory_allocated() / 2**30
    flops = megatron_flops(a) * a.accum
    tflops = flops / step_time / 1e12
    tokens_per_s = a.micro_batch * a.accum * a.seq / step_time
    print(f"[summary] {impl}: median step {step_time * 1e3:.1f} ms over {len(measured)} steps, "
          f"{tokens_per_s:,.0f} tokens/s, {tflops:.1f} TFLOP/s ({flops / 1e12:.2f} TFLOP/step), "
          f"MFU {100 * tflops / a.peak_tflops:.1f}% of {a.peak_tflops:g}, peak memory {peak_mem:.2f} GiB, "
          f"lm loss {lms[0]:.4f} -> {lms[-1]:.4f}, grouped_mm {'on' if USE_GROUPED_MM else 'off'}")
    result = {"impl": impl, "data": a.data, "layers": a.layers, "seq": a.seq, "micro_batch": a.micro_batch,
              "accum": a.accum, "experts": a.experts, "topk": a.topk, "step_time_s": step_time,
              "tokens_per_s": tokens_per_s, "tflops": tflops, "mfu": tflops / a.peak_tflops,
              "peak_mem_gib": peak_mem, "loss_first": lms[0], "loss_last": lms[-1],
              "torch": torch.__version__, "device": torch.cuda.get_device_name()}
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
