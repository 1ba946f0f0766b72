#!/usr/bin/env python3
"""The expert weight-gradient GEMMs of the reference step, timed one way at a time.

foldtron writes each expert's weight gradient straight into its fp32 main gradient, one cuBLAS
GEMM per expert (torch's addmm/mm with out_dtype=float32, beta 1 after the first micro-batch);
the PyTorch-native step makes them all in one bf16 grouped GEMM (torch._grouped_mm). This times,
for the reference's shapes (Mixtral-8x7B, micro-batch 4: 4,096 rows per expert), the per-expert
GEMM accumulating into fp32, writing fp32, writing bf16, and the grouped bf16 GEMM, so that a
trace's difference between the two steps can be told apart into the kernel and the fp32 output.
Run it under different cuBLAS settings (TORCH_BLAS_PREFER_CUBLASLT=1, CUBLASLT_WORKSPACE_SIZE)
to see whether another kernel choice closes the gap.

Usage: bench/wgrad_gemm.py [--rows 4096] [--experts 8] [--hidden 4096] [--ffn 14336] [--repeats 20]
The last line is `RESULT {json}` (TFLOP/s per variant and shape).
"""
import argparse
import json
import os

import torch

from calibrate_planner import timed  # median CUDA-event milliseconds after warm-up (bench/ is on the path)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=4096, help="rows (token copies) per expert")
    parser.add_argument("--experts", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=4096)
    parser.add_argument("--ffn", type=int, default=14336)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("wgrad_gemm.py: needs a CUDA GPU")
    torch.manual_seed(0)
    rows, experts = args.rows, args.experts
    settings = {k: os.environ.get(k, "") for k in ("TORCH_BLAS_PREFER_CUBLASLT", "CUBLASLT_WORKSPACE_SIZE",
                                                    "PYTORCH_TUNABLEOP_ENABLED")}
    print(f"[env] torch {torch.__version__} on {torch.cuda.get_device_name()}, settings {settings}")
    result = {"settings": settings, "rows": rows, "experts": experts, "tflops": {}}
    # gate_up: out [2F, H] = dy [R, 2F]^T x [R, H]; down: out [H, F] = dy [R, H]^T h [R, F].
    for name, n, k in (("gate_up", 2 * args.ffn, args.hidden), ("down", args.hidden, args.ffn)):
        dy = torch.randn(experts * rows, n, device="cuda", dtype=torch.bfloat16)  # [E*R, N]
        x = torch.randn(experts * rows, k, device="cuda", dtype=torch.bfloat16)   # [E*R, K]
        main = torch.zeros(experts, n, k, device="cuda", dtype=torch.float32)     # [E, N, K]
        bf16 = torch.empty(experts, n, k, device="cuda", dtype=torch.bfloat16)    # [E, N, K]
        offs = torch.arange(1, experts + 1, device="cuda", dtype=torch.int32) * rows  # [E] row ends
        pieces = [(dy[e * rows:(e + 1) * rows].t(), x[e * rows:(e + 1) * rows]) for e in range(experts)]

        def accumulate():
            for e, (a, b) in enumerate(pieces):
                torch.addmm(main[e], a, b, out_dtype=torch.float32, out=main[e])

        def write_fp32():
            for e, (a, b) in enumerate(pieces):
                torch.mm(a, b, out_dtype=torch.float32, out=main[e])

        def write_bf16():
            for e, (a, b) in enumerate(pieces):
                torch.mm(a, b, out=bf16[e])

        def grouped_bf16():
            torch._grouped_mm(dy.t(), x, offs=offs)

        flop = 2.0 * experts * rows * n * k
        for variant, fn in (("fp32_accumulate", accumulate), ("fp32_write", write_fp32),
                            ("bf16_write", write_bf16), ("grouped_bf16", grouped_bf16)):
            ms = timed(fn, args.repeats)
            tflops = flop / ms / 1e9
            result["tflops"][f"{name}/{variant}"] = round(tflops, 1)
            print(f"wgrad {name:8s} {variant:16s} {ms:8.3f} ms  {tflops:6.1f} TFLOP/s")
        # The accumulation is right: from zero, one accumulating pass gives expert 0's product.
        main.zero_()
        accumulate()
        reference = (pieces[0][0].float() @ pieces[0][1].float())
        error = ((main[0] - reference).abs().max() / reference.abs().max()).item()
        print(f"wgrad {name:8s} fp32 accumulate against an fp32 product: max relative error {error:.2e}")
        del dy, x, main, bf16
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
