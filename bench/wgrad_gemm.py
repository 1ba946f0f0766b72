#!/usr/bin/env python3
"""The expert weight-gradient GEMMs of the reference step, timed one way at a time.

foldtron writes each expert's weight gradient straight into its fp32 main gradient, one cuBLAS
GEMM per expert (torch's addmm/mm with out_dtype=float32, beta 1 after the first micro-batch);
the PyTorch-native step makes them all in one bf16 grouped GEMM (torch._grouped_mm). This times,
for the reference's shapes (Mixtral-8x7B, micro-batch 4: 4,096 rows per expert), the per-expert
GEMM accumulating into fp32, writing fp32, writing bf16, and the grouped bf16 GEMM, so that a
trace's difference between the two steps can be told apart into the kernel and the fp32 output.
Run it under different cuBLAS settings (TORCH_BLAS_PREFER_CUBLASLT=1, CUBLASLT_WORKSPACE_SIZE)
to see whether another kernel choice closes the gap. The `streams2`/`streams3` variants split the
per-expert accumulating GEMMs round-robin over two or three CUDA streams (forked from and joined
to the current one), so that one GEMM's partial last wave of tiles overlaps the next one's start;
--spread makes the experts' row counts uneven, as a router's are (expert e gets
rows * (1 - spread + 2 * spread * e / (E - 1)) rows, the same total). `cublas_grouped` makes all
the experts' accumulating GEMMs in one call of cuBLAS's grouped API (cublasGemmGroupedBatchedEx,
cuBLAS 12.5 and later, through ctypes on the library torch loaded: one group per expert, bf16
inputs, fp32 output, beta 1), the library's own answer to foldtron's per-expert calls.

Usage: bench/wgrad_gemm.py [--rows 4096] [--spread 0] [--experts 8] [--hidden 4096] [--ffn 14336] [--repeats 20]
The last line is `RESULT {json}` (TFLOP/s per variant and shape).
"""
import argparse
import ctypes
import json
import os

import torch

from calibrate_planner import timed  # median CUDA-event milliseconds after warm-up (bench/ is on the path)


def cublas_grouped_accumulate(pieces, main):
    """A function that adds each expert's dy^T x into main[e] (fp32) with one cuBLAS grouped call, or
    a string saying why it cannot (no such function, a status other than success)."""
    torch.mm(torch.ones(8, 8, device="cuda"), torch.ones(8, 8, device="cuda"))  # cuBLAS loaded
    with open("/proc/self/maps") as maps:
        paths = sorted({line.split()[-1] for line in maps if "libcublas.so" in line and "Lt" not in line})
    if not paths:
        return "libcublas is not loaded"
    lib = ctypes.CDLL(paths[0])
    if not hasattr(lib, "cublasGemmGroupedBatchedEx"):
        return f"{paths[0]} has no cublasGemmGroupedBatchedEx"
    experts = len(pieces)
    ints = ctypes.c_int * experts
    # Row-major main[e] [N, K] is column-major [K, N]: C = x_e^T (K x R, ld K) times dy_e (R x N: the
    # column-major N x R of dy_e transposed, ld N).
    n, k = main.shape[1], main.shape[2]
    rows = [a.shape[1] for a, _ in pieces]
    a_ptrs = torch.tensor([b.data_ptr() for _, b in pieces], dtype=torch.int64, device="cuda")
    b_ptrs = torch.tensor([a.data_ptr() for a, _ in pieces], dtype=torch.int64, device="cuda")  # dy_e (a = dy_e^T)
    c_ptrs = torch.tensor([main[e].data_ptr() for e in range(experts)], dtype=torch.int64, device="cuda")
    op_n, op_t, bf16, fp32, compute_32f = 0, 1, 14, 0, 68
    args = (ints(*[op_n] * experts), ints(*[op_t] * experts), ints(*[k] * experts), ints(*[n] * experts),
            ints(*rows), (ctypes.c_float * experts)(*[1.0] * experts), ctypes.c_void_p(a_ptrs.data_ptr()),
            ctypes.c_int(bf16), ints(*[k] * experts), ctypes.c_void_p(b_ptrs.data_ptr()), ctypes.c_int(bf16),
            ints(*[n] * experts), (ctypes.c_float * experts)(*[1.0] * experts), ctypes.c_void_p(c_ptrs.data_ptr()),
            ctypes.c_int(fp32), ints(*[k] * experts), ctypes.c_int(experts), ints(*[1] * experts),
            ctypes.c_int(compute_32f))

    def run():
        # torch's handle, fetched per call: fetching binds it to the current stream (a variant
        # before may have left it on a side stream).
        handle = ctypes.c_void_p(torch.cuda.current_blas_handle())
        status = lib.cublasGemmGroupedBatchedEx(handle, *args)
        if status != 0:
            raise RuntimeError(f"cublasGemmGroupedBatchedEx returned status {status}")
    run.pointers = (a_ptrs, b_ptrs, c_ptrs)  # the device pointer arrays live as long as the function
    try:
        run()
        torch.cuda.synchronize()
    except RuntimeError as error:
        return str(error)
    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=4096, help="rows (token copies) per expert")
    parser.add_argument("--spread", type=float, default=0.0, help="uneven rows: 0 even, 0.5 from 0.5x to 1.5x")
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
    spread = args.spread
    counts = [int(rows * (1 - spread + 2 * spread * e / max(experts - 1, 1))) for e in range(experts)]
    counts[-1] += experts * rows - sum(counts)
    starts = [sum(counts[:e]) for e in range(experts)]
    result = {"settings": settings, "rows": rows, "spread": spread, "counts": counts, "experts": experts,
              "tflops": {}}
    # gate_up: out [2F, H] = dy [R, 2F]^T x [R, H]; down: out [H, F] = dy [R, H]^T h [R, F].
    for name, n, k in (("gate_up", 2 * args.ffn, args.hidden), ("down", args.hidden, args.ffn)):
        dy = torch.randn(experts * rows, n, device="cuda", dtype=torch.bfloat16)  # [E*R, N]
        x = torch.randn(experts * rows, k, device="cuda", dtype=torch.bfloat16)   # [E*R, K]
        main = torch.zeros(experts, n, k, device="cuda", dtype=torch.float32)     # [E, N, K]
        bf16 = torch.empty(experts, n, k, device="cuda", dtype=torch.bfloat16)    # [E, N, K]
        offs = torch.tensor([s + c for s, c in zip(starts, counts)], device="cuda", dtype=torch.int32)  # [E] row ends
        pieces = [(dy[s:s + c].t(), x[s:s + c]) for s, c in zip(starts, counts)]
        side = [torch.cuda.Stream() for _ in range(2)]

        def accumulate():
            for e, (a, b) in enumerate(pieces):
                torch.addmm(main[e], a, b, out_dtype=torch.float32, out=main[e])

        def write_fp32():
            for e, (a, b) in enumerate(pieces):
                torch.mm(a, b, out_dtype=torch.float32, out=main[e])

        def write_bf16():
            for e, (a, b) in enumerate(pieces):
                torch.mm(a, b, out=bf16[e])

        def accumulate_on(streams):  # expert e on streams[e % len]; the first is the current stream
            fork = torch.cuda.Event()
            fork.record()
            for stream in streams[1:]:
                stream.wait_event(fork)
            for e, (a, b) in enumerate(pieces):
                with torch.cuda.stream(streams[e % len(streams)]):
                    torch.addmm(main[e], a, b, out_dtype=torch.float32, out=main[e])
            for stream in streams[1:]:
                join = torch.cuda.Event()
                join.record(stream)
                torch.cuda.current_stream().wait_event(join)

        def grouped_bf16():
            torch._grouped_mm(dy.t(), x, offs=offs)

        flop = 2.0 * experts * rows * n * k
        cublas_grouped = cublas_grouped_accumulate(pieces, main)
        if isinstance(cublas_grouped, str):
            print(f"wgrad {name:8s} cublas_grouped: not run: {cublas_grouped}")
            result[f"{name}/cublas_grouped"] = cublas_grouped
        for variant, fn in (("fp32_accumulate", accumulate), ("fp32_write", write_fp32),
                            ("bf16_write", write_bf16), ("grouped_bf16", grouped_bf16),
                            ("streams2", lambda: accumulate_on([torch.cuda.current_stream()] + side[:1])),
                            ("streams3", lambda: accumulate_on([torch.cuda.current_stream()] + side)),
                            ("cublas_grouped", cublas_grouped)):
            if not callable(fn):
                continue
            ms = timed(fn, args.repeats)
            tflops = flop / ms / 1e9
            result["tflops"][f"{name}/{variant}"] = round(tflops, 1)
            print(f"wgrad {name:8s} {variant:16s} {ms:8.3f} ms  {tflops:6.1f} TFLOP/s")
        # The accumulation is right: from zero, one accumulating pass gives expert 0's product.
        main.zero_()
        accumulate()
        reference = (pieces[0][0].float() @ pieces[0][1].float())

        def error():  # expert 0's largest difference from the fp32 product, relative to its largest value
            return ((main[0] - reference).abs().max() / reference.abs().max()).item()
        print(f"wgrad {name:8s} fp32 accumulate against an fp32 product: max relative error {error():.2e}")
        once = main.clone()  # one per-expert pass, which the other ways must match
        if callable(cublas_grouped):  # the grouped call's sums against the per-expert ones
            main.zero_()
            cublas_grouped()
            print(f"wgrad {name:8s} cublas grouped against an fp32 product: max relative error {error():.2e}")
            print(f"wgrad {name:8s} cublas grouped equals the per-expert GEMMs bit for bit: {torch.equal(main, once)}")
        # The same sums split over streams: bit-identical.
        main.zero_()
        accumulate_on([torch.cuda.current_stream()] + side)
        torch.cuda.synchronize()
        print(f"wgrad {name:8s} three streams equal one stream bit for bit: {torch.equal(main, once)}")
        del dy, x, main, bf16
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
