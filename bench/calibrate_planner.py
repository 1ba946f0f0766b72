#!/usr/bin/env python3
"""Kernel rates for `foldtron plan`'s step-time model, measured on the GPU it runs on.

The planner predicts a training step from the pieces a step is made of, so this script times
those pieces with the kernels foldtron's step calls (torch's cuBLAS GEMMs, torch._grouped_mm for
the experts, cuDNN/flash SDPA for attention, plain HBM traffic for the optimizer and elementwise
work) over the shapes the planner meets, and writes them as a hardware profile (JSON) that
`foldtron plan --profile FILE` reads (configs/hardware/<gpu>.json holds the shipped ones).

  python3 bench/calibrate_planner.py --out configs/hardware/h200.json [--quick]

Every rate is the median of timed repetitions after warm-up, CUDA events around the kernels only.
GEMM rates are per pass (forward, input gradient, weight gradient into fp32 as foldtron writes
its main gradients); attention is forward + backward of causal SDPA with grouped-query heads.
"""
import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F


def timed(fn, reps, warmup=3):
    """Median milliseconds of fn() over reps runs (CUDA events, after warmup runs)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def accumulate_fp32(main_grad, a, b, first=False):
    """main_grad += a @ b with fp32 output, as torch_compat::mm_fp32_out(accumulate) runs it
    (a bf16 product added in fp32 where this torch lacks the fp32-output GEMM; noted in the profile)."""
    if WGRAD_FP32_OUT and first:  # the first micro-batch writes (beta 0)
        torch.mm(a, b, out_dtype=torch.float32, out=main_grad)
    elif WGRAD_FP32_OUT:
        torch.addmm(main_grad, a, b, out_dtype=torch.float32, out=main_grad)
    elif first:
        main_grad.copy_(torch.mm(a, b))
    else:
        main_grad.add_(torch.mm(a, b))


WGRAD_FP32_OUT = True


def probe_fp32_out():
    global WGRAD_FP32_OUT
    try:
        c = torch.zeros(8, 8, device="cuda")
        a = torch.ones(8, 16, device="cuda", dtype=torch.bfloat16)
        accumulate_fp32(c, a, a.t(), first=True)
        accumulate_fp32(c, a, a.t())
        assert float(c[0, 0]) == 32.0
    except Exception as e:  # noqa: BLE001 - any failure means the fallback
        print(f"[warn] addmm with out_dtype=float32 unusable ({type(e).__name__}: {e}); bf16 product + fp32 add")
        WGRAD_FP32_OUT = False


def hbm_rate(reps):
    """GB/s of an fp32 a*x+y over 1 GiB vectors (read two, write one), as AdamW-like passes move."""
    n = 1 << 28
    x, y, out = (torch.randn(n, device="cuda") for _ in range(3))
    ms = timed(lambda: torch.add(y, x, alpha=0.5, out=out), reps)
    return 3 * 4 * n / (ms * 1e-3) / 1e9


def gemm_rates(sizes, reps):
    """TFLOP/s of the three passes of a bf16 linear y[m,n] = x[m,k] W[n,k]^T."""
    rows = []
    for m, n, k in sizes:
        x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
        w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16)
        dy = torch.randn(m, n, device="cuda", dtype=torch.bfloat16)
        main_grad = torch.zeros(n, k, device="cuda", dtype=torch.float32)
        passes = {
            "forward": lambda: torch.mm(x, w.t()),
            "dgrad": lambda: torch.mm(dy, w),
            # foldtron accumulates weight gradients into fp32 main gradients (beta 1)
            "wgrad": lambda: accumulate_fp32(main_grad, dy.t(), x),
            "wgrad_first": lambda: accumulate_fp32(main_grad, dy.t(), x, first=True),
        }
        for name, fn in passes.items():
            ms = timed(fn, reps)
            rows.append({"m": m, "n": n, "k": k, "pass": name, "ms": round(ms, 4),
                         "tflops": round(2 * m * n * k / (ms * 1e-3) / 1e12, 1)})
        del x, w, dy, main_grad
    return rows


def grouped_rates(cases, reps):
    """TFLOP/s of the experts' GEMMs: E experts, R rows each, hidden h, expert width f (SwiGLU:
    gate/up [2f, h] and down [h, f]); forward and input gradient are grouped GEMMs, the weight
    gradients per-expert GEMMs into fp32 (as foldtron's experts run them)."""
    rows = []
    for experts, per_expert, h, f in cases:
        r = experts * per_expert
        x = torch.randn(r, h, device="cuda", dtype=torch.bfloat16)
        act = torch.randn(r, f, device="cuda", dtype=torch.bfloat16)
        gate_up = torch.randn(experts, 2 * f, h, device="cuda", dtype=torch.bfloat16)
        down = torch.randn(experts, h, f, device="cuda", dtype=torch.bfloat16)
        d_gate_up = torch.randn(r, 2 * f, device="cuda", dtype=torch.bfloat16)
        d_out = torch.randn(r, h, device="cuda", dtype=torch.bfloat16)
        offs = torch.arange(1, experts + 1, device="cuda", dtype=torch.int32) * per_expert
        main_gate_up = torch.zeros(experts, 2 * f, h, device="cuda")
        main_down = torch.zeros(experts, h, f, device="cuda")

        def forward():
            torch._grouped_mm(x, gate_up.transpose(1, 2), offs=offs)
            torch._grouped_mm(act, down.transpose(1, 2), offs=offs)

        def dgrad():
            torch._grouped_mm(d_out, down, offs=offs)
            torch._grouped_mm(d_gate_up, gate_up, offs=offs)

        def wgrad(first=False):
            for e in range(experts):
                rows_e = slice(e * per_expert, (e + 1) * per_expert)
                accumulate_fp32(main_gate_up[e], d_gate_up[rows_e].t(), x[rows_e], first)
                accumulate_fp32(main_down[e], d_out[rows_e].t(), act[rows_e], first)

        flops = 2 * r * h * f * 3  # one pass over the three projections
        for name, fn in (("forward", forward), ("dgrad", dgrad), ("wgrad", wgrad),
                         ("wgrad_first", lambda: wgrad(first=True))):
            ms = timed(fn, reps)
            rows.append({"experts": experts, "rows_per_expert": per_expert, "hidden": h, "ffn": f, "pass": name,
                         "ms": round(ms, 4), "tflops": round(flops / (ms * 1e-3) / 1e12, 1)})
        del x, act, gate_up, down, d_gate_up, d_out, main_gate_up, main_down
        torch.cuda.empty_cache()
    return rows


def attention_rates(cases, reps):
    """Forward + backward milliseconds of causal SDPA (batch 1, head_dim d) and the TFLOP/s of the
    causal half of the score and value products (4*s*s*a*d/2 forward, 2.5x that backward)."""
    rows = []
    for seq, heads, groups, d in cases:
        q = torch.randn(1, heads, seq, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        k = torch.randn(1, groups, seq, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        v = torch.randn(1, groups, seq, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        grad = torch.randn(1, heads, seq, d, device="cuda", dtype=torch.bfloat16)

        def step():
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
            out.backward(grad)

        ms = timed(step, reps)
        flops = 3.5 * 4 * seq * seq * heads * d / 2
        rows.append({"seq": seq, "heads": heads, "groups": groups, "head_dim": d, "ms": round(ms, 4),
                     "tflops": round(flops / (ms * 1e-3) / 1e12, 1)})
        del q, k, v, grad
        torch.cuda.empty_cache()
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="profile file to write (JSON)")
    parser.add_argument("--quick", action="store_true", help="fewer shapes and repetitions (a smoke test)")
    args = parser.parse_args()
    # foldtron's fp32 products (ring attention's explicit math) run without TF32, as LibTorch's
    # default is; the 2026-12-02 profile was measured with TF32 on (173 TFLOP/s, docs/planner.md).
    torch.backends.cuda.matmul.allow_tf32 = False
    reps = 3 if args.quick else 10
    props = torch.cuda.get_device_properties(0)
    started = time.time()
    probe_fp32_out()
    widths = [(4096, 4096), (6144, 4096), (4096, 6144), (1024, 4096), (2048, 4096), (3072, 4096),
              (32000, 4096), (16000, 4096), (6144, 6144), (8192, 6144), (32768, 6144), (3584, 3584),
              (4608, 3584), (151936, 3584), (75968, 3584), (20480, 3584)]
    tokens = [1024, 4096, 8192, 16384]
    if args.quick:
        widths, tokens = widths[:2], tokens[:2]
    gemm = gemm_rates([(m, n, k) for m in tokens for n, k in widths], reps)
    grouped_cases = [(e, r, h, f) for e, r in ((1, 4096), (2, 4096), (4, 4096), (8, 2048), (8, 4096), (4, 2048),
                                               (2, 2048), (8, 1024), (4, 1024), (8, 512))
                     for h, f in ((4096, 14336), (6144, 16384))]
    grouped_cases += [(e, r, 3584, 2560) for e, r in ((64, 512), (32, 512), (32, 1024), (16, 1024), (64, 256),
                                                      (32, 256), (16, 512), (8, 1024))]
    if args.quick:
        grouped_cases = grouped_cases[:2]
    grouped = grouped_rates(grouped_cases, reps)
    attn_cases = [(s, a, g, 128) for s in (2048, 4096, 8192, 16384, 32768, 65536, 131072)
                  for a, g in ((32, 8), (16, 4), (48, 8), (24, 4), (28, 4), (14, 2))]
    if args.quick:
        attn_cases = attn_cases[:2]
    attention = attention_rates(attn_cases, max(3, reps // 2))
    profile = {
        # The links (NCCL times) and the fitted constants are not measured here: they come from
        # the base profile until replaced (docs/planner.md says how they were obtained for h200).
        "base": "h200",
        "name": props.name,
        "memory_gib": round(props.total_memory / 2**30, 2),
        "peak_bf16_tflops": 989.4,
        "hbm_gbps": round(hbm_rate(reps), 1),
        "torch": torch.__version__,
        "wgrad_fp32_out": WGRAD_FP32_OUT,
        "measured": time.strftime("%Y-%m-%d"),
        "command": "python3 bench/calibrate_planner.py --out " + args.out + (" --quick" if args.quick else ""),
        "gemm": gemm,
        "grouped": grouped,
        "attention": attention,
    }
    with open(args.out, "w") as f:
        json.dump(profile, f, indent=1)
    print(f"RESULT wrote {args.out}: {len(gemm)} GEMM, {len(grouped)} grouped, {len(attention)} attention rates, "
          f"HBM {profile['hbm_gbps']} GB/s, in {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
