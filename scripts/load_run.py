#!/usr/bin/env python3
"""The long CPU run of docs/reliability.md: tiny-moe for thousands of steps at 8 ranks (tp 2 x pp 2
x dp 2, experts ep 2), a checkpoint every --save-interval steps, run twice:

  1. uninterrupted, every rank's resident memory sampled twice a second;
  2. killed --kills times (SIGKILL to a random rank at a random time) and resumed from the last
     checkpoint each time, until the last step.

Checks: every step's loss, gradient norm and learning rate of run 2 equal run 1's bit for bit
(the metrics files; a resumed run keeps the records up to its checkpoint); memory flat: the
growth of each rank's anonymous resident memory (RssAnon: heap and private mappings, where a leak
shows) between the first and the last quarter of run 1, in MiB per 1,000 steps, under 1 MiB. The
file-backed (RssFile: libraries and mapped data, resident as first touched) and shared (RssShmem:
MPI's shared-memory transport) parts are reported beside it. Prints a summary and writes it as
JSON (--out), with each rank's anonymous memory over each tenth of run 1 (whether it levels off).
--kills 0 runs run 1 only (the memory figure of a long run). Exit 1 when a check fails.
Usage: scripts/load_run.py [--steps 2000] [--save-interval 100] [--kills 4] [--seed 1]
         [--foldtron build/bin/foldtron] [--workdir /tmp/foldtron_load] [--out FILE.json]
"""
import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fault_trials import latest_step, losses, mpi_env, rank_pids  # noqa: E402

NP = 8


def command(args, workdir, steps):
    return ["mpirun", "-np", str(NP), args.foldtron, "train", "--device", "cpu", "--config", "configs/tiny-moe.yaml", "--tp", "2", "--pp",
            "2", "--ep", "2", "--set", f"train.train_iters={steps}", "--set", "train.global_batch_size=8",
            "--set", "train.lr_decay_iters=" + str(steps), "--set", f"checkpoint.save={workdir}/ckpt", "--set",
            f"checkpoint.save_interval={args.save_interval}", "--set", "checkpoint.keep_last=2", "--set",
            f"logging.metrics_file={workdir}/metrics.jsonl", "--set", "logging.log_interval=1"]


def fail(what, log_path, lines=30):
    """Exits naming what failed, with the end of its job log (the log may be on a machine that is gone)."""
    try:
        with open(log_path, errors="replace") as f:
            tail = "".join(f.readlines()[-lines:])
    except OSError:
        tail = "(no log)\n"
    sys.exit(f"load_run: {what}; the last {lines} lines of {log_path}:\n{tail}")


KINDS = ("RssAnon", "RssFile", "RssShmem")
BAR_MIB_PER_1000_STEPS = 1.0


def rss_mib(pid):
    """{kind: MiB} of a process's resident memory, or None when it is gone."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                kind = line.split(":")[0]
                if kind in KINDS:
                    out[kind] = int(line.split()[1]) / 1024
    except OSError:
        return None
    return out if len(out) == len(KINDS) else None


def current_step(workdir):
    try:
        with open(f"{workdir}/metrics.jsonl", "rb") as f:
            f.seek(max(0, os.path.getsize(f.name) - 4096))
            lines = [l for l in f.read().decode(errors="replace").splitlines() if l.startswith("{")]
        return json.loads(lines[-1]).get("step", 0) if lines else 0
    except (OSError, ValueError):
        return 0


def uninterrupted(args, workdir):
    os.makedirs(workdir)
    log = open(f"{workdir}/job.log", "w")
    started = time.monotonic()
    proc = subprocess.Popen(command(args, workdir, args.steps), stdout=log, stderr=subprocess.STDOUT, env=mpi_env())
    samples = []  # (step, {rank: MiB})
    while proc.poll() is None:
        time.sleep(0.5)
        ranks = rank_pids(proc.pid)
        sizes = {r: rss_mib(p) for r, p in ranks.items()}
        if len(sizes) == NP and all(sizes.values()):
            samples.append((current_step(workdir), sizes))
    if proc.wait() != 0:
        fail(f"the uninterrupted run failed (exit {proc.returncode})", f"{workdir}/job.log")
    return time.monotonic() - started, samples


def interrupted(args, workdir, rng):
    os.makedirs(workdir)
    kills = []
    started = time.monotonic()
    attempt = 0
    while True:
        attempt += 1
        cmd = command(args, workdir, args.steps)
        if latest_step(f"{workdir}/ckpt") is not None:
            cmd += ["--set", f"checkpoint.load={workdir}/ckpt"]
        with open(f"{workdir}/job_{attempt}.log", "w") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=mpi_env())
            if len(kills) < args.kills:
                # A kill one to two checkpoint intervals after the step the metrics file last showed
                # (for a resumed attempt, possibly the killed attempt's last step), so each restart
                # resumes from a checkpoint of its own run.
                target = current_step(workdir) + rng.randint(args.save_interval, 2 * args.save_interval)
                while proc.poll() is None and current_step(workdir) < min(target, args.steps - 1):
                    time.sleep(0.2)
                ranks = rank_pids(proc.pid)
                if proc.poll() is None and ranks:
                    rank = rng.choice(sorted(ranks))
                    step = current_step(workdir)
                    try:
                        os.kill(ranks[rank], signal.SIGKILL)
                        kills.append({"rank": rank, "after_step": step, "resumed_from": None})
                    except ProcessLookupError:
                        pass
            try:
                code = proc.wait(timeout=args.steps * 5)
            except subprocess.TimeoutExpired:
                proc.kill()
                fail(f"attempt {attempt} hangs", f"{workdir}/job_{attempt}.log")
        resumed = latest_step(f"{workdir}/ckpt")
        if kills and kills[-1]["resumed_from"] is None and code != 0:
            kills[-1]["resumed_from"] = resumed
        if code == 0:
            break
        if attempt > args.kills + 3:
            fail("the run keeps failing", f"{workdir}/job_{attempt}.log")
    return time.monotonic() - started, kills


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--save-interval", type=int, default=100)
    parser.add_argument("--kills", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--foldtron", default="build/bin/foldtron")
    parser.add_argument("--workdir", default="/tmp/foldtron_load")
    parser.add_argument("--out")
    args = parser.parse_args()
    os.chdir(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    args.foldtron = os.path.abspath(args.foldtron)
    shutil.rmtree(args.workdir, ignore_errors=True)
    rng = random.Random(args.seed)
    seconds_a, samples = uninterrupted(args, f"{args.workdir}/uninterrupted")
    a = losses(f"{args.workdir}/uninterrupted/metrics.jsonl")
    if args.kills > 0:
        seconds_b, kills = interrupted(args, f"{args.workdir}/interrupted", rng)
        b = losses(f"{args.workdir}/interrupted/metrics.jsonl")
    else:  # the memory figure alone: nothing to compare
        seconds_b, kills, b = 0.0, [], a
    differ = [s for s in a if b.get(s) != a[s]]
    if len(samples) < 4:
        sys.exit(f"load_run: only {len(samples)} memory samples; see {args.workdir}/uninterrupted/job.log")
    quarter = len(samples) // 4
    early, late = samples[:quarter], samples[-quarter:]
    steps = max(1, sum(s[0] for s in late) / len(late) - sum(s[0] for s in early) / len(early))
    growth = {}
    for rank in range(NP):
        growth[rank] = {}
        for kind in KINDS:
            first = sum(s[1][rank][kind] for s in early) / len(early)
            last = sum(s[1][rank][kind] for s in late) / len(late)
            growth[rank][kind] = {"early_mib": round(first, 2), "late_mib": round(last, 2),
                                  "mib_per_1000_steps": round((last - first) / steps * 1000, 3)}
    # Whether it levels off: each rank's anonymous memory averaged over each tenth of the samples.
    tenths = [samples[i * len(samples) // 10:(i + 1) * len(samples) // 10] for i in range(10)]
    tenths = [t for t in tenths if t]  # fewer than ten samples: fewer groups
    anon_by_tenth = {rank: [round(sum(s[1][rank]["RssAnon"] for s in t) / len(t), 2) for t in tenths] for rank in range(NP)}
    tenth_steps = [round(sum(s[0] for s in t) / len(t)) for t in tenths]
    worst = max(g["RssAnon"]["mib_per_1000_steps"] for g in growth.values())
    summary = {"steps": args.steps, "ranks": NP, "save_interval": args.save_interval, "kills": kills,
               "uninterrupted_s": round(seconds_a, 1), "interrupted_s": round(seconds_b, 1),
               "steps_compared": len(a), "steps_in_interrupted": len(b), "steps_differing": differ[:20],
               "memory": growth, "rss_samples": len(samples),
               "anon_mib_by_tenth": {"mean_step": tenth_steps, "ranks": anon_by_tenth}, "worst_anon_growth_mib_per_1000_steps": worst}
    print(json.dumps(summary, indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(summary, f, indent=1)
    ok = not differ and len(a) == args.steps and len(b) == args.steps and len(kills) == args.kills and worst < BAR_MIB_PER_1000_STEPS
    print(f"load_run: {'ok' if ok else 'FAILED'}: {args.steps} steps at {NP} ranks, {len(kills)} kills and resumes, "
          f"{len(differ)} steps differ, anonymous memory growth at most {worst} MiB per 1,000 steps "
          f"(bar {BAR_MIB_PER_1000_STEPS})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
