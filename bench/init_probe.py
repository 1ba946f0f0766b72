#!/usr/bin/env python3
"""Where the reference model's initialization time goes (issue 20: 6.07 B parameters in under 20 s).

foldtron's full_normal (src/layers/context.cpp) fills each full weight on the host in blocks of
2^20 values, each block from its own seeded CPU generator, into pinned memory, then copies it to
the GPU. This probe times those parts for one expert weight of mixtral-8x7b ([14336, 4096], fp32)
with torch in Python, so no build is needed: the block fill on one thread and on a thread pool,
the pinned and pageable allocations (first and repeated), the host-to-device copy, and, for
comparison, the same tensor drawn by the GPU's generator. Prints one RESULT line per part, with
the projection to the 6.07 B values of the reference model (4 layers).
Usage: python3 bench/init_probe.py [--threads 16]
"""
import argparse
import time
from concurrent.futures import ThreadPoolExecutor

import torch

BLOCK = 1 << 20
SHAPE = (14336, 4096)
REFERENCE_VALUES = 6.07e9


def fill(flat, first, last):
    for block in range(first, last):
        generator = torch.Generator().manual_seed(12345 + block)
        flat[block * BLOCK:(block + 1) * BLOCK].normal_(0.0, 1.0, generator=generator)


def report(name, seconds, values):
    per_value = seconds / values
    print(f"RESULT {name}: {seconds:.4f} s for {values / 1e6:.1f} M values; "
          f"{values / seconds / 1e6:.0f} M values/s; reference model {per_value * REFERENCE_VALUES:.1f} s")


def timed(fn):
    start = time.perf_counter()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=16)
    args = parser.parse_args()
    values = SHAPE[0] * SHAPE[1]
    blocks = (values + BLOCK - 1) // BLOCK
    print(f"torch {torch.__version__}, intra-op threads {torch.get_num_threads()}, "
          f"pool {args.threads}, tensor {SHAPE}, {blocks} blocks")
    cuda = torch.cuda.is_available()
    for attempt in range(3):
        host, seconds = timed(lambda: torch.empty(SHAPE, pin_memory=cuda))
        report(f"allocate {'pinned' if cuda else 'pageable'} #{attempt}", seconds, values)
        del host
    host = torch.empty(SHAPE, pin_memory=cuda)
    flat = host.view(-1)
    _, seconds = timed(lambda: fill(flat, 0, blocks))
    report("block fill, one thread", seconds, values)
    with ThreadPoolExecutor(args.threads) as pool:
        def parallel():
            step = (blocks + args.threads - 1) // args.threads
            list(pool.map(lambda i: fill(flat, i, min(blocks, i + step)), range(0, blocks, step)))
        _, seconds = timed(parallel)
        report(f"block fill, {args.threads} threads", seconds, values)
    _, seconds = timed(lambda: host.normal_(0.0, 1.0, generator=torch.Generator().manual_seed(1)))
    report("one normal_ call", seconds, values)
    if not cuda:
        return
    for attempt in range(2):
        _, seconds = timed(lambda: host.to("cuda"))
        report(f"host-to-device copy #{attempt}", seconds, values)
    for attempt in range(2):
        _, seconds = timed(lambda: torch.empty(SHAPE, device="cuda").normal_(
            0.0, 1.0, generator=torch.Generator("cuda").manual_seed(1)))
        report(f"GPU generator #{attempt}", seconds, values)


if __name__ == "__main__":
    main()
