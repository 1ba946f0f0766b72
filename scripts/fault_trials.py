#!/usr/bin/env python3
"""Fault trials for docs/reliability.md: a real multi-rank training job (tiny-moe, 4 ranks, pp 2 x
ep 2, checkpoints every few steps) under mpirun, hit by the faults a long job meets, each checked
against what foldtron promises.

  kill   a rank SIGKILLed at a random point of a step (a signal from outside at a random time), of
         a checkpoint save (its N-th file write), of an expert all-to-all (its N-th), of a pipeline
         exchange (its N-th batch_p2p); FOLDTRON_FAULT injects the last three (src/core/fault.h).
         Promise: the job ends within 30 s of the death, non-zero, its log names the dead rank
         (the launcher's line) and where the survivors waited (our line: operation and group),
         and the last complete checkpoint resumes.
  stall  a rank SIGSTOPped as it posts its N-th all_reduce, parallel.timeout_s 5: the others end
         the job naming the collective within the timeout (plus start-up and abort slack).
  term   SIGTERM to every rank at a random time (a scheduler's preemption, as Slurm sends it):
         exit 0 within the grace period with the step's checkpoint saved; resumed, every step's
         loss, gradient norm and learning rate equal an uninterrupted run's bit for bit.
  disk   a checkpoint write failing with ENOSPC (injected at a random write of a random rank):
         with checkpoint.on_save_error stop the job ends naming the disk and the last complete
         checkpoint resumes; with warn training goes on and the next saves land.
  tmpfs  the same on a real full filesystem (a small tmpfs; root only) and on a read-only one.

Usage: scripts/fault_trials.py [--foldtron build/bin/foldtron] [--trials 50] [--seed 1]
         [--kinds kill,stall,term,disk,tmpfs] [--short] [--out FILE.jsonl] [--workdir DIR]
--short runs one trial of each kind and point (CI); otherwise --trials trials are drawn at random
over the kinds and points. Prints one line per trial and a summary; exits 1 if any trial broke a
promise. Each record in --out holds the trial's parameters, timings and verdict.
"""
import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time

NP = 4
ITERS = 12
SAVE_INTERVAL = 3
BASE_SETS = [f"train.train_iters={ITERS}", f"checkpoint.save_interval={SAVE_INTERVAL}", "logging.log_interval=1"]
KILL_POINTS = {  # point -> (FOLDTRON_FAULT point, largest N drawn); None: a signal from outside
    "step": None,
    "save": ("checkpoint_write", 250),  # a rank writes 25-95 tensors per save; past its last: drawn again
    "all_to_all": ("all_to_all", 1200),
    "p2p": ("batch_p2p", 300),
}
DEAD_RANK = re.compile(r"process rank (\d+) with PID \d+ on node \S+ exited on signal 9")
SURVIVOR = re.compile(r"foldtron: world rank (\d+) got SIGTERM in ([^,\n]+)(?:, waiting ([\d.]+) s in (\S+) on group '([^']+)')?")


def mpi_env(extra=None):
    env = dict(os.environ)
    env.update({"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1", "OMP_NUM_THREADS": "1",
                "OMPI_MCA_rmaps_base_oversubscribe": "1"})
    env.pop("FOLDTRON_FAULT", None)
    env.update(extra or {})
    return env


def rank_pids(parent):
    """World rank -> pid of the ranks mpirun started (read from their environments)."""
    ranks = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            if ppid != parent:
                continue
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = dict(v.split(b"=", 1) for v in f.read().split(b"\0") if b"=" in v)
            if b"OMPI_COMM_WORLD_RANK" in env:
                ranks[int(env[b"OMPI_COMM_WORLD_RANK"])] = int(entry)
        except (OSError, IndexError, ValueError):
            continue
    return ranks


class Job:
    """One mpirun of `foldtron train`, its output in a log file, its ranks watched."""

    def __init__(self, args, save, sets, env=None, np=NP, log=None, load=None):
        self.log_path = log
        cmd = ["mpirun", "-np", str(np), args.foldtron, "train", "--config", "configs/tiny-moe.yaml", "--pp", "2",
               "--ep", "2", "--set", f"checkpoint.save={save}", "--set",
               f"logging.metrics_file={os.path.join(os.path.dirname(log), 'metrics.jsonl')}"]
        if load:
            cmd += ["--set", f"checkpoint.load={load}"]
        for s in BASE_SETS + sets:
            cmd += ["--set", s]
        self.cmd = cmd
        self.log = open(log, "w")
        self.start = time.monotonic()
        # A session of its own: a job past its time limit is ended with all its ranks (killpg).
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=mpi_env(env),
                                     start_new_session=True)
        self.ranks = {}
        self.first_death = None  # monotonic time a rank was first seen gone

    def watch(self, until):
        """Polls until the job ends or `until` (monotonic) passes; notes the first rank to vanish."""
        while self.proc.poll() is None and time.monotonic() < until:
            now = rank_pids(self.proc.pid)
            if len(now) > len(self.ranks):
                self.ranks = now
            if self.first_death is None and self.ranks and len(now) < len(self.ranks):
                self.first_death = time.monotonic()
            time.sleep(0.05)
        return self.proc.poll()

    def progressed(self, step):
        return f"step {step}/" in self.text()

    def into_training(self, rng, most_s, record):
        """Waits for step 1's progress line, then a random 0 to `most_s` seconds (noted in record)."""
        wait_for_ranks(self)
        until = time.monotonic() + 60
        while not self.progressed(1) and self.proc.poll() is None and time.monotonic() < until:
            self.watch(time.monotonic() + 0.1)
        delay = rng.uniform(0.0, most_s)
        record["delay_s"] = round(delay, 3)
        self.watch(time.monotonic() + delay)

    def text(self):
        if not self.log.closed:
            self.log.flush()
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def finish(self, limit):
        try:
            self.proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            for sig in (signal.SIGCONT, signal.SIGTERM, signal.SIGKILL):  # stopped ranks too
                try:
                    os.killpg(self.proc.pid, sig)
                except ProcessLookupError:
                    break
                time.sleep(1)
            self.proc.wait()
        self.end = time.monotonic()
        self.log.close()
        return self.proc.returncode


def latest_step(save):
    try:
        with open(os.path.join(save, "latest")) as f:
            return int(f.read().strip().split("_")[1])
    except (OSError, IndexError, ValueError):
        return None


def resumes(args, save, directory, step):
    """The last complete checkpoint loads (every file verified) and trains one more step (saving
    elsewhere: the trial's folder may sit on a full disk)."""
    job = Job(args, os.path.join(directory, "resumed_ckpt"), [f"train.train_iters={step + 1}"],
              log=os.path.join(directory, "resume.log"), load=save)
    return job.finish(120) == 0


def wait_for_ranks(job, count=NP, limit=60):
    until = time.monotonic() + limit
    while len(job.ranks) < count and job.proc.poll() is None and time.monotonic() < until:
        job.watch(time.monotonic() + 0.2)


def trial_kill(args, rng, directory, point):
    save = os.path.join(directory, "ckpt")
    rank = rng.randrange(NP)
    record = {"kind": "kill", "point": point, "rank": rank}
    fault = KILL_POINTS[point]
    env = {}
    if fault:
        record["nth"] = rng.randint(1, max(1, int(fault[1] * args.shrink)))
        env["FOLDTRON_FAULT"] = f"kill@{fault[0]}#{record['nth']}/{rank}"
    job = Job(args, save, [], env=env, log=os.path.join(directory, "job.log"))
    wait_for_ranks(job)
    if not fault:
        job.into_training(rng, 2.5, record)
        if job.proc.poll() is None and rank in job.ranks:
            try:
                os.kill(job.ranks[rank], signal.SIGKILL)
            except ProcessLookupError:
                pass
    job.watch(time.monotonic() + 120)
    code = job.finish(60)
    text = job.text()
    record["code"] = code
    if code == 0:
        record["verdict"] = "not reached"  # the fault's N lay beyond the run: drawn again
        return record
    died = job.first_death or job.end  # not seen: a problem below
    record["end_after_death_s"] = round(job.end - died, 2)
    dead = DEAD_RANK.findall(text)
    survivors = SURVIVOR.findall(text)
    waits = [f"{s[3]} on group '{s[4]}'" for s in survivors if s[3]]
    record["dead_named"] = [int(r) for r in dead]
    record["survivor_lines"] = len(survivors)
    record["waits"] = sorted(set(waits))
    step = latest_step(save)
    record["latest"] = step
    problems = []
    if job.first_death is None:
        problems.append("no rank was seen to die")
    if record["end_after_death_s"] > 30:
        problems.append("ended more than 30 s after the death")
    if rank not in record["dead_named"]:
        problems.append(f"no line names rank {rank} as dead")
    if not waits:
        problems.append("no survivor names the operation it waited in")
    if step is not None and not resumes(args, save, directory, step):
        problems.append(f"the last complete checkpoint (step {step}) does not resume")
    record["verdict"] = "; ".join(problems) or "ok"
    return record


def trial_stall(args, rng, directory):
    save = os.path.join(directory, "ckpt")
    rank = rng.randrange(NP)
    nth = rng.randint(1, max(1, int(40 * args.shrink)))
    timeout = 5
    record = {"kind": "stall", "point": "all_reduce", "rank": rank, "nth": nth, "timeout_s": timeout}
    job = Job(args, save, [f"parallel.timeout_s={timeout}"], env={"FOLDTRON_FAULT": f"stop@all_reduce#{nth}/{rank}"},
              log=os.path.join(directory, "job.log"))
    stopped_at = None
    until = time.monotonic() + 180
    while job.proc.poll() is None and time.monotonic() < until:
        job.watch(time.monotonic() + 0.1)
        pid = job.ranks.get(rank)
        if stopped_at is None and pid:
            try:
                with open(f"/proc/{pid}/stat") as f:
                    if f.read().rsplit(")", 1)[1].split()[0] == "T":
                        stopped_at = time.monotonic()
            except OSError:
                pass
    code = job.finish(30)
    text = job.text()
    record["code"] = code
    if stopped_at is None and code == 0:
        record["verdict"] = "not reached"
        return record
    record["end_after_stop_s"] = round(job.end - (stopped_at or job.start), 2)
    named = re.findall(r"MPI (\w+) on group '([^']+)' did not finish within", text)
    record["named"] = sorted({f"{op} on group '{g}'" for op, g in named})
    problems = []
    if code == 0:
        problems.append("exited 0")
    if not named:
        problems.append("no rank named the stalled collective")
    if record["end_after_stop_s"] > timeout + 15:
        problems.append(f"took {record['end_after_stop_s']} s, more than the timeout + 15 s")
    record["verdict"] = "; ".join(problems) or "ok"
    return record


def losses(path):
    """step -> (loss, grad_norm, lr) of a metrics file's training records."""
    out = {}
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            if "loss" in r and "grad_norm" in r:
                out[r["step"]] = (r["loss"], r["grad_norm"], r["lr"])
    return out


def reference_losses(args, workdir):
    path = os.path.join(workdir, "reference", "metrics.jsonl")
    if not os.path.exists(path):
        directory = os.path.join(workdir, "reference")
        os.makedirs(directory, exist_ok=True)
        job = Job(args, os.path.join(directory, "ckpt"), [], log=os.path.join(directory, "job.log"))
        if job.finish(300) != 0:
            sys.exit(f"fault_trials: the uninterrupted reference run failed; see {directory}/job.log")
    return losses(path)


def trial_term(args, rng, directory, grace=30.0):
    save = os.path.join(directory, "ckpt")
    record = {"kind": "term", "point": "step", "grace_s": grace}
    job = Job(args, save, [], log=os.path.join(directory, "job.log"))
    job.into_training(rng, 2.0, record)
    if job.proc.poll() is not None:
        job.finish(1)
        record["verdict"] = "not reached"
        return record
    sent = time.monotonic()
    for pid in job.ranks.values():  # every rank, as Slurm signals every task
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    job.watch(sent + grace)
    if job.proc.poll() is None:  # the grace is over: the scheduler kills
        for pid in rank_pids(job.proc.pid).values():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    code = job.finish(30)
    record["code"] = code
    record["exit_after_term_s"] = round(job.end - sent, 2)
    step = latest_step(save)
    record["latest"] = step
    problems = []
    if code != 0:
        problems.append(f"exited {code}")
    if record["exit_after_term_s"] > grace:
        problems.append("did not exit within the grace period")
    if "stopping after step" not in job.text():
        problems.append("no stop line")
    if step is None:
        problems.append("no checkpoint")
    elif step < ITERS:
        resumed = Job(args, save, [], log=os.path.join(directory, "resume.log"), load=save)
        if resumed.finish(300) != 0:
            problems.append("the resumed run failed")
    if not problems:
        mine, reference = losses(os.path.join(directory, "metrics.jsonl")), reference_losses(args, args.workdir)
        differ = [s for s in reference if mine.get(s) != reference[s]]
        record["steps_compared"] = len(reference)
        if differ:
            problems.append(f"steps {differ} differ from the uninterrupted run")
    record["verdict"] = "; ".join(problems) or "ok"
    return record


def trial_disk(args, rng, directory, policy):
    save = os.path.join(directory, "ckpt")
    rank = rng.randrange(NP)
    nth = rng.randint(1, max(1, int(250 * args.shrink)))  # 25-95 tensors a save per rank; past the last: again
    record = {"kind": "disk", "point": "checkpoint_write", "policy": policy, "rank": rank, "nth": nth}
    job = Job(args, save, [f"checkpoint.on_save_error={policy}"],
              env={"FOLDTRON_FAULT": f"enospc@checkpoint_write#{nth}/{rank}"}, log=os.path.join(directory, "job.log"))
    code = job.finish(300)
    text = job.text()
    record["code"] = code
    if "No space left on device" not in text:
        record["verdict"] = "not reached" if code == 0 else f"exited {code} without the disk error"
        return record
    step = latest_step(save)
    record["latest"] = step
    problems = []
    if not re.search(r"rank \d+ could not write its part of the checkpoint of step \d+", text):
        problems.append("the error does not name the failing rank and step")
    if policy == "stop":
        if code != 2:
            problems.append(f"exited {code}, not 2")
        if step is not None and not resumes(args, save, directory, step):
            problems.append(f"the last complete checkpoint (step {step}) does not resume")
    else:
        if code != 0:
            problems.append(f"exited {code} under warn")
        if "a save failed and training goes on" not in text:
            problems.append("no warning")
        if step != ITERS:
            problems.append(f"the final checkpoint is step {step}, not {ITERS}")
    # Under warn training goes on, so a failed save must not leave its partial folder behind (under
    # stop the job ends at once; the next save of that step removes what is left).
    leftovers = [d for d in os.listdir(save) if d.endswith(".tmp")] if os.path.isdir(save) else []
    if policy == "warn" and leftovers:
        problems.append(f"partial folders left: {leftovers}")
    record["verdict"] = "; ".join(problems) or "ok"
    return record


def trial_tmpfs(args, rng, directory, mode):
    """A real full (12 MiB: one 7.5 MiB checkpoint fits, two do not) or read-only filesystem."""
    record = {"kind": "tmpfs", "point": mode}
    mount = os.path.join(directory, "mnt")
    os.makedirs(mount, exist_ok=True)
    options = "size=12m" if mode == "full" else "size=1m,ro"
    if subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", mount], capture_output=True).returncode != 0:
        record["verdict"] = "skipped (mounting a tmpfs needs root)"
        return record
    try:
        save = os.path.join(mount, "ckpt")
        job = Job(args, save, [], log=os.path.join(directory, "job.log"))
        code = job.finish(300)
        text = job.text()
        record["code"] = code
        step = latest_step(save)
        record["latest"] = step
        expected = "No space left on device" if mode == "full" else "Read-only file system"
        problems = []
        if code != 2:
            problems.append(f"exited {code}, not 2")
        if expected not in text:
            problems.append(f"no '{expected}' in the error")
        if mode == "full":
            if step != SAVE_INTERVAL:
                problems.append(f"latest is {step}, not the first save ({SAVE_INTERVAL})")
            elif not resumes(args, save, directory, step):
                problems.append("the first checkpoint does not resume after the disk filled")
        record["verdict"] = "; ".join(problems) or "ok"
        return record
    finally:
        subprocess.run(["umount", mount], capture_output=True)


def run_trial(args, rng, index, kind, point):
    directory = os.path.join(args.workdir, f"trial_{index:03d}")
    shutil.rmtree(directory, ignore_errors=True)
    os.makedirs(directory)
    for attempt in range(5):  # a fault drawn beyond the run's end is drawn again, from half the range
        args.shrink = 0.5 ** attempt
        if kind == "kill":
            record = trial_kill(args, rng, directory, point)
        elif kind == "stall":
            record = trial_stall(args, rng, directory)
        elif kind == "term":
            record = trial_term(args, rng, directory)
        elif kind == "disk":
            record = trial_disk(args, rng, directory, point)
        else:
            record = trial_tmpfs(args, rng, directory, point)
        if record["verdict"] != "not reached":
            break
        shutil.rmtree(os.path.join(directory, "ckpt"), ignore_errors=True)
    record["trial"] = index
    record["attempts"] = attempt + 1
    if record["verdict"] == "ok" and not args.keep:
        shutil.rmtree(directory, ignore_errors=True)
    return record


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--foldtron", default="build/bin/foldtron")
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--kinds", default="kill,stall,term,disk,tmpfs")
    parser.add_argument("--short", action="store_true", help="one trial of each kind and point (CI)")
    parser.add_argument("--out", help="JSONL file of the trials' records")
    parser.add_argument("--workdir", default="/tmp/foldtron_faults")
    parser.add_argument("--keep", action="store_true", help="keep every trial's folder (failed ones are always kept)")
    args = parser.parse_args()
    os.chdir(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    args.foldtron = os.path.abspath(args.foldtron)
    if not os.access(args.foldtron, os.X_OK):
        sys.exit(f"fault_trials: no foldtron at {args.foldtron}; build it (scripts/build.sh) or pass --foldtron")
    kinds = args.kinds.split(",")
    unknown = set(kinds) - {"kill", "stall", "term", "disk", "tmpfs"}
    if unknown:
        sys.exit(f"fault_trials: unknown kinds {sorted(unknown)}; choose from kill,stall,term,disk,tmpfs")
    plan = []
    for kind in kinds:
        points = {"kill": list(KILL_POINTS), "disk": ["stop", "warn"], "tmpfs": ["full", "readonly"]}.get(kind, [None])
        plan += [(kind, p) for p in points]
    rng = random.Random(args.seed)
    if not args.short:
        plan = [rng.choice(plan) for _ in range(args.trials)]
    shutil.rmtree(args.workdir, ignore_errors=True)
    os.makedirs(args.workdir)
    out = open(args.out, "w") if args.out else None
    failed = 0
    started = time.monotonic()
    for index, (kind, point) in enumerate(plan):
        record = run_trial(args, rng, index, kind, point)
        failed += record["verdict"] not in ("ok",) and not record["verdict"].startswith("skipped")
        shown = {k: v for k, v in record.items() if k not in ("trial", "kind", "point", "verdict")}
        print(f"trial {index:3d} {kind:5s} {str(point):10s} {record['verdict']:4s} {json.dumps(shown)}", flush=True)
        if out:
            out.write(json.dumps(record) + "\n")
            out.flush()
    print(f"fault_trials: {len(plan)} trials, {failed} broke a promise, {time.monotonic() - started:.0f} s "
          f"(seed {args.seed}, work in {args.workdir})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
