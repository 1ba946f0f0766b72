#!/usr/bin/env python3
"""The tables of docs/discourse.md from scripts/gpu_discourse.sh's results.jsonl: per run, the mean
and standard deviation over seeds of the kept epoch's test accuracy and macro-F1 (and dev), and for
4-way runs the one-vs-rest F1 of each top-level class.
  python3 scripts/discourse_table.py results.jsonl"""
import json
import statistics
import sys
from collections import defaultdict

ORDER = ["base", "mg", "mem", "base11", "mg11", "mem11", "nochar", "noword", "nocontext", "nopair", "noactive"]
NAMES = {
    "base": "baseline (frozen encoder, linear)", "mg": "multi-grained", "mem": "multi-grained + memory",
    "base11": "baseline", "mg11": "multi-grained", "mem11": "multi-grained + memory",
    "nochar": "multi-grained without characters", "noword": "multi-grained without words",
    "nocontext": "multi-grained without the encoder", "nopair": "multi-grained without bi-attention",
    "noactive": "+ memory reading every instance (no active set)",
}


def stat(values):
    mean = 100 * statistics.mean(values)
    sd = 100 * statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.2f} ± {sd:.2f}"


def main(path):
    runs = defaultdict(list)
    for line in open(path):
        r = json.loads(line)
        runs[r["run"]].append(r)
    print("| run | level | seeds | test accuracy | test macro-F1 | dev accuracy | dev macro-F1 | epoch kept | s, 10 epochs |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in [n for n in ORDER if n in runs] + sorted(set(runs) - set(ORDER)):
        rs = runs[name]
        level = "11-way" if name.endswith("11") else "4-way"
        print(f"| {NAMES.get(name, name)} | {level} | {len(rs)} | {stat([r['test']['accuracy'] for r in rs])} | "
              f"{stat([r['test']['macro_f1'] for r in rs])} | {stat([r['dev']['accuracy'] for r in rs])} | "
              f"{stat([r['dev']['macro_f1'] for r in rs])} | "
              f"{' '.join(str(r['epoch']) for r in sorted(rs, key=lambda r: r['seed']))} | "
              f"{statistics.mean(r['seconds'] for r in rs):.0f} |")
    print()
    print("| run (4-way) | " + " | ".join(f"{c} F1" for c in ["Comparison", "Contingency", "Expansion", "Temporal"])
          + " |")
    print("|---|---|---|---|---|")
    for name in [n for n in ORDER if n in runs and not n.endswith("11")]:
        rs = runs[name]
        cells = [stat([r["test"]["binary_f1"].get(c, 0.0) for r in rs])
                 for c in ["Comparison", "Contingency", "Expansion", "Temporal"]]
        print(f"| {NAMES.get(name, name)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1])
