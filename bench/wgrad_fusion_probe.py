"""What gradient-accumulation fusion could save on this GPU (issue 7's next optimization).

The expert weight gradients of the reference config (Mixtral 8x7B, 4 layers, micro-batch 2,
sequence 4096: 16,384 routed rows over 8 experts) are computed today as bf16 grouped GEMMs and
then copied (first micro-batch) or added into the fp32 main-gradient buffer. Fusion would have the
GEMM write fp32 directly. This times, per layer and projection, the bf16 GEMM, the GEMM plus the
copy (today), and a GEMM with an fp32 output (out_dtype) where this torch has one, alone and
followed by an add (no beta=1 accumulate in the API), and per-expert cuBLAS GEMMs that write
the fp32 buffer in place. Prints one RESULT line per measurement.

    python3 bench/wgrad_fusion_probe.py [--experts 8 --hidden 4096 --ffn 14336 --rows 16384]
"""
import argparse
import time

import torch


def timed(fn, iters=20):
    fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / iters * 1e3


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--experts", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=4096)
    parser.add_argument("--ffn", type=int, default=14336)
    parser.add_argument("--rows", type=int, default=16384)
    args = parser.parse_args()
    g, h, f, t = args.experts, args.hidden, args.ffn, args.rows
    dev = "cuda"
    torch.manual_seed(0)
    x = torch.randn(t, h, device=dev, dtype=torch.bfloat16)
    dy = torch.randn(t, 2 * f, device=dev, dtype=torch.bfloat16)
    offs = (torch.arange(1, g + 1, device=dev, dtype=torch.int32) * (t // g)).contiguous()
    main_grad = torch.zeros(g, 2 * f, h, device=dev, dtype=torch.float32)
    flops = 2.0 * t * 2 * f * h
    print(f"torch {torch.__version__}; wgrad of gate_up: {g} experts x [{2 * f}, {h}] from {t} rows")

    def report(name, ms):
        print(f"RESULT {name}: {ms:.3f} ms ({flops / ms / 1e9:.0f} TFLOP/s)")

    a = dy.t()  # [2F, T]: the K (row) dimension grouped by offs
    try:
        report("bf16 grouped GEMM", timed(lambda: torch._grouped_mm(a, x, offs=offs)))
        report("bf16 grouped GEMM + copy into fp32 (today)",
               timed(lambda: main_grad.copy_(torch._grouped_mm(a, x, offs=offs))))
        report("bf16 grouped GEMM + add into fp32 (accumulation)",
               timed(lambda: main_grad.add_(torch._grouped_mm(a, x, offs=offs))))
    except Exception as e:  # noqa: BLE001 - report what this torch supports
        print(f"RESULT bf16 grouped GEMM: unavailable ({type(e).__name__}: {str(e)[:200]})")
    try:
        out = torch._grouped_mm(a, x, offs=offs, out_dtype=torch.float32)
        ref = torch._grouped_mm(a, x, offs=offs).float()
        print(f"fp32-out max |diff| vs bf16-out: {(out - ref).abs().max().item():.3g}")
        report("fp32-out grouped GEMM (fusion, first micro-batch)",
               timed(lambda: torch._grouped_mm(a, x, offs=offs, out_dtype=torch.float32)))
        report("fp32-out grouped GEMM + add (fusion without beta=1)",
               timed(lambda: main_grad.add_(torch._grouped_mm(a, x, offs=offs, out_dtype=torch.float32))))
    except Exception as e:  # noqa: BLE001
        print(f"RESULT fp32-out grouped GEMM: unavailable ({type(e).__name__}: {str(e)[:200]})")
    # Per expert (the dropless path knows the counts on the host): cuBLAS GEMMs writing the fp32
    # main gradient in place, beta 0 (first micro-batch) or 1 (accumulation).
    rows = t // g
    views = [(a[:, e * rows:(e + 1) * rows], x[e * rows:(e + 1) * rows], main_grad[e]) for e in range(g)]
    report("per-expert bf16 mm + copy into fp32",
           timed(lambda: [m.copy_(ae @ xe) for ae, xe, m in views]))
    try:
        report("per-expert fp32-out mm into the main gradient (fusion, first micro-batch)",
               timed(lambda: [torch.mm(ae, xe, out_dtype=torch.float32, out=m) for ae, xe, m in views]))
        report("per-expert fp32-out addmm into the main gradient (fusion, accumulation)",
               timed(lambda: [torch.addmm(m, ae, xe, out_dtype=torch.float32, out=m) for ae, xe, m in views]))
        fused = main_grad.clone()
        for ae, xe, m in zip([v[0] for v in views], [v[1] for v in views], fused):
            torch.mm(ae, xe, out_dtype=torch.float32, out=m)
        ref = torch._grouped_mm(a, x, offs=offs).float()
        print(f"per-expert fp32-out max |diff| vs grouped bf16-out: {(fused - ref).abs().max().item():.3g}")
    except Exception as e:  # noqa: BLE001
        print(f"RESULT per-expert fp32-out mm: unavailable ({type(e).__name__}: {str(e)[:200]})")
    # Dense projections (attention): mm with an fp32 output.
    w_in = torch.randn(t // 2, h, device=dev, dtype=torch.bfloat16)
    w_dy = torch.randn(t // 2, h, device=dev, dtype=torch.bfloat16)
    dense_main = torch.zeros(h, h, device=dev, dtype=torch.float32)
    dense_flops = 2.0 * (t // 2) * h * h
    ms = timed(lambda: dense_main.copy_(w_dy.t() @ w_in))
    print(f"RESULT dense bf16 mm + copy: {ms:.3f} ms ({dense_flops / ms / 1e9:.0f} TFLOP/s)")
    try:
        ms = timed(lambda: torch.mm(w_dy.t(), w_in, out_dtype=torch.float32))
        print(f"RESULT dense fp32-out mm: {ms:.3f} ms ({dense_flops / ms / 1e9:.0f} TFLOP/s)")
        ms = timed(lambda: torch.addmm(dense_main, w_dy.t(), w_in, out_dtype=torch.float32))
        print(f"RESULT dense fp32-out addmm (beta=1 accumulate): {ms:.3f} ms ({dense_flops / ms / 1e9:.0f} TFLOP/s)")
    except Exception as e:  # noqa: BLE001
        print(f"RESULT dense fp32-out mm: unavailable ({type(e).__name__}: {str(e)[:200]})")


if __name__ == "__main__":
    main()
