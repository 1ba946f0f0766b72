#!/usr/bin/env python3
"""The running count of the dropless permutation (moe/dispatcher.cpp, permute_copies), timed two ways.

Each copy (t, e) of a token routed to expert e goes to row start[e] + (the tokens before t routed to
e). foldtron computed that as a scan down the columns of the [tokens, experts] routing map
(`map.long().cumsum(0)`); its trace on an H200 showed torch's outer-dimension scan kernel taking
3.2 ms a layer and micro-batch at 16,384 tokens and 8 experts. The same numbers, plus start[e], are
the scan of the expert-major map flattened to one dimension (`map.t().reshape(-1).long().cumsum(0)`),
which torch runs as one device-wide scan. This times both (with the transposing copies and the
conversion, as the dispatcher does them) for the reference's shapes and Qwen2-57B-A14B's, and
checks that they give the same rows. (The figures in docs/performance.md, twenty-fifth session,
were taken before the copy back to token-major order was added: 1 MiB at 16,384 x 8.)

Usage: bench/routing_scan.py [--repeats 50]
The last line is `RESULT {json}` (milliseconds per shape and way).
"""
import argparse
import json

import torch

from calibrate_planner import timed  # median CUDA-event milliseconds after warm-up (bench/ is on the path)


def routing_map(tokens, experts, topk, generator):
    """A [tokens, experts] boolean map with `topk` experts per token, as a router's top-k gives."""
    scores = torch.rand(tokens, experts, device="cuda", generator=generator)
    chosen = scores.topk(topk, dim=1).indices
    return torch.zeros(tokens, experts, dtype=torch.bool, device="cuda").scatter_(1, chosen, True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=50)
    a = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("[error] CUDA is not available: this benchmark needs an NVIDIA GPU")
    generator = torch.Generator(device="cuda").manual_seed(0)
    results = {}
    # (name, tokens, experts, top-k): Mixtral-8x7B at micro-batch 4 and 2, Qwen2-57B-A14B at 2 and 4.
    for name, tokens, experts, topk in (("mixtral_mb4", 16384, 8, 2), ("mixtral_mb2", 8192, 8, 2),
                                        ("qwen2_mb2", 8192, 64, 8), ("qwen2_mb4", 16384, 64, 8)):
        m = routing_map(tokens, experts, topk, generator)
        columns = lambda: m.long().cumsum(0)  # noqa: E731  [n, E]: the running count per column
        # [n, E]: start[e] + that count, back in token-major order as the dispatcher uses it
        flat = lambda: m.t().reshape(-1).long().cumsum(0).view(experts, tokens).t().contiguous()  # noqa: E731
        starts = m.long().sum(0).cumsum(0) - m.long().sum(0)  # [E]
        same = torch.equal(columns() + starts, flat())
        ms = {"columns": timed(columns, a.repeats), "flat": timed(flat, a.repeats)}
        print(f"{name}: {tokens} tokens x {experts} experts: scan down the columns {ms['columns']:.3f} ms, "
              f"flattened {ms['flat']:.3f} ms; same rows: {same}", flush=True)
        results[name] = {**ms, "same": same}
    print("RESULT " + json.dumps(results), flush=True)


if __name__ == "__main__":
    main()
