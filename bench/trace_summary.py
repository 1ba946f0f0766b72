#!/usr/bin/env python3
"""Where the GPU time of one traced training step goes.

Reads the Chrome trace that `foldtron train --set logging.profile_step=N` writes (Kineto: CPU ops
and CUDA kernels), or that bench/torch_native_moe.py writes with --profile-step N, and prints the
GPU time per category (attention, dense GEMMs, grouped expert GEMMs, permute/unpermute, norms and
elementwise, torch.compile's fused kernels, communication, optimizer, copies), the GPU idle time
inside the step, the gaps between kernels by length (and the longest, with their neighbours), and
the longest kernels.

Usage: bench/trace_summary.py trace.json [--top 20]
"""
import argparse
import json
import re
from collections import defaultdict

# First match wins; patterns are searched in lower-case kernel names.
CATEGORIES = [
    ("communication", r"nccl"),
    ("attention", r"flash|fmha|attention|sdpa|cudnn"),
    ("elementwise", r"multi_tensor_apply_kernel.*copyfunctor"),  # the multi-tensor gradient widening copy
    ("optimizer", r"adam|multi_tensor|foreach|l2norm"),
    ("fused (triton, torch.compile)", r"^triton_"),  # torch.compile's generated kernels: norms, casts, adds
    ("expert gemm (grouped)", r"group"),
    ("gemm", r"gemm|xmma|nvjet|cutlass|sm90_|sm100_|cublas|splitk"),
    ("permute / sort / index", r"index|scatter|gather|sort|radix|cub::|nonzero|cumsum|masked|embedding|unique|histc|bincount|topk"),
    ("norm / softmax / reduce", r"norm|softmax|reduce|welford|cross_entropy|nll|logsumexp"),
    ("elementwise", r"elementwise|vectorized|unrolled|copy|fill|cat|swiglu"),
]


def category(name):
    lower = name.lower()
    for label, pattern in CATEGORIES:
        if re.search(pattern, lower):
            return label
    return "other"


def busy_time(intervals):
    total, end = 0.0, -1.0
    for start, stop in sorted(intervals):
        if stop <= end:
            continue
        total += stop - max(start, end)
        end = stop
    return total


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("trace")
    parser.add_argument("--top", type=int, default=20)
    args = parser.parse_args()
    with open(args.trace) as f:
        events = json.load(f)["traceEvents"]
    gpu = [e for e in events if e.get("ph") == "X" and e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset")]
    if not gpu:
        raise SystemExit(f"{args.trace}: no GPU events (was the step traced on a CUDA device?)")
    timed = [e for e in events if e.get("ph") == "X" and "dur" in e]
    span_start = min(e["ts"] for e in timed)
    span_end = max(e["ts"] + e["dur"] for e in timed)
    span = span_end - span_start
    by_category, by_kernel, count = defaultdict(float), defaultdict(float), defaultdict(int)
    for e in gpu:
        label = "copies / memset" if e["cat"] != "kernel" else category(e["name"])
        by_category[label] += e["dur"]
        by_kernel[e["name"]] += e["dur"]
        count[e["name"]] += 1
    kernels = sum(by_category.values())
    busy = busy_time([(e["ts"], e["ts"] + e["dur"]) for e in gpu])
    print(f"traced span {span / 1e3:.1f} ms; GPU busy {busy / 1e3:.1f} ms ({100 * busy / span:.1f}%), "
          f"idle {(span - busy) / 1e3:.1f} ms; kernel time {kernels / 1e3:.1f} ms (overlapping streams counted twice)")
    print(f"{'category':28s} {'ms':>9s} {'% of kernel time':>17s}")
    for label, dur in sorted(by_category.items(), key=lambda item: -item[1]):
        print(f"{label:28s} {dur / 1e3:9.2f} {100 * dur / kernels:16.1f}%")
    print(f"\nlongest kernels (total over the step):")
    for name, dur in sorted(by_kernel.items(), key=lambda item: -item[1])[: args.top]:
        print(f"{dur / 1e3:9.2f} ms {count[name]:5d}x  [{category(name)}] {name[:110]}")
    # Where the GPU waits: the gaps between one kernel's end and the next start, by size, and the
    # longest ones with the kernels on either side (a host synchronization shows as a gap after
    # the copy or reduction the host waits for).
    ordered = sorted((e["ts"], e["ts"] + e["dur"], e["name"]) for e in gpu)
    gaps, end, before = [], ordered[0][1], ordered[0][2]
    for start, stop, name in ordered[1:]:
        if start > end:
            gaps.append((start - end, before, name))
        if stop > end:
            end, before = stop, name
    sizes = [(0, 10), (10, 50), (50, 200), (200, 1e12)]
    print("\nGPU gaps inside the step (between kernels), by length:")
    for low, high in sizes:
        inside = [g[0] for g in gaps if low <= g[0] < high]
        label = f"{low:.0f}-{high:.0f} us" if high < 1e12 else f">= {low:.0f} us"
        print(f"{label:>12s}: {len(inside):5d} gaps, {sum(inside) / 1e3:8.2f} ms")
    print("longest gaps:")
    for dur, before, after in sorted(gaps, reverse=True)[:10]:
        print(f"{dur / 1e3:9.3f} ms after {before[:60]} | before {after[:60]}")
    print("RESULT " + json.dumps({"span_ms": span / 1e3, "busy_ms": busy / 1e3,
                                  "categories_ms": {k: v / 1e3 for k, v in by_category.items()}}))


if __name__ == "__main__":
    main()
