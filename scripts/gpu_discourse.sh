#!/usr/bin/env bash
# On the GPU machine: the discourse experiment of docs/discourse.md (issue 19).
#   build  scripts/gpu_build.sh without the test suites (build-gpu/)
#   mlm    the contextual encoder: configs/discourse/mlm.yaml on GPU 0 for $MLM_STEPS steps or
#          $MLM_LIMIT seconds (SIGTERM: the trainer saves and stops), into $WORK_DIR/encoder
#   runs   the classifiers of $RUNS (default: every run below) for seeds $SEEDS (default 1 2 3),
#          $JOBS at once (default 4 per GPU), each limited to $RUN_LIMIT seconds, none started
#          after $DEADLINE seconds from the script's start:
#            base mg mem                       baseline, multigrained, multigrained + memory (4-way)
#            base11 mg11 mem11                 the same at 11-way
#            nochar noword nocontext nopair    multigrained without one grain (4-way)
#            noactive                          + memory reading every instance, not the active set
#          configs/discourse/multigrained.yaml with the run's --set; the kept epoch's dev and test
#          scores, one JSON line per run in $OUT/results.jsonl, and a table of means and standard
#          deviations (scripts/discourse_table.py).
# The logs and per-epoch metrics in $OUT/logs.tar.gz. DATA_DIR (.gpu/discourse, carried) holds
# corpus/{train,dev,test}.json (scripts/discourse_corpus.sh) and mlm/ (scripts/discourse_data.sh).
# Usage: scripts/gpu_discourse.sh [output dir]; PARTS="build mlm runs" (the default).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-/tmp}}
OMP_NUM_THREADS=2 source scripts/gpu_env.sh
parts=${PARTS:-build mlm runs}
data=${DATA_DIR:-.gpu/discourse}
work=${WORK_DIR:-.gpu/work}
mlm_steps=${MLM_STEPS:-2000}
mlm_limit=${MLM_LIMIT:-180}
run_limit=${RUN_LIMIT:-400}
read -r -a seeds <<< "${SEEDS:-1 2 3}"
read -r -a runs <<< "${RUNS:-base mg mem base11 mg11 mem11 nochar noword nocontext nopair noactive}"
jobs=${JOBS:-$(( 4 * gpus ))}
deadline=$(( $(date +%s) + ${DEADLINE:-100000} ))  # no run starts after DEADLINE seconds from here
mkdir -p "$work/runs"
foldtron=build-gpu/bin/foldtron

if has build; then
  GPU_CMAKE_ARGS="-DFOLDTRON_WERROR=OFF -DFOLDTRON_BUILD_TESTS=OFF" scripts/gpu_build.sh -R '^$' > "$work/build.log" 2>&1
  echo "== build rc=$?"
  [[ -x $foldtron ]] || { tail -40 "$work/build.log"; exit 1; }
fi

if has mlm; then
  rm -rf "$work/encoder"
  CUDA_VISIBLE_DEVICES=0 timeout -k 10 "$mlm_limit" "$foldtron" train --config configs/discourse/mlm.yaml \
    --device cuda --set "translation.data=$data/mlm" --set "data.tokenizer_model=$data/mlm/spm.model" \
    --train-iters "$mlm_steps" --set "checkpoint.save=$work/encoder" --metrics-file "$out/mlm.jsonl" \
    > "$work/mlm.log" 2>&1
  rc=$?
  echo "== mlm rc=$rc (124: stopped at the time limit after saving)"
  [[ $rc -eq 0 || $rc -eq 124 ]] || status=1
  grep -E "error|mean step|saved" "$work/mlm.log" | tail -4 | cut -c1-300
  tail -1 "$out/mlm.jsonl" | cut -c1-300
fi

sets_of() {  # run name -> its --set arguments
  case $1 in
    base) echo "discourse.model=baseline" ;;
    mg) echo "" ;;
    mem) echo "discourse.memory=true" ;;
    base11) echo "discourse.model=baseline discourse.level=11way" ;;
    mg11) echo "discourse.level=11way" ;;
    mem11) echo "discourse.memory=true discourse.level=11way" ;;
    nochar) echo "discourse.grains=word+context+pair" ;;
    noword) echo "discourse.grains=char+context+pair" ;;
    nocontext) echo "discourse.grains=char+word+pair" ;;
    nopair) echo "discourse.grains=char+word+context" ;;
    noactive) echo "discourse.memory=true discourse.memory_active_set=false" ;;
    *) echo "unknown run $1" >&2; return 1 ;;
  esac
}

one_run() {  # name seed slot
  local name=$1 seed=$2 gpu=$(( $3 % gpus )) args=()
  if (( $(date +%s) > deadline )); then echo "== $name seed $seed: not started (past DEADLINE)"; return; fi
  for s in $(sets_of "$name"); do args+=(--set "${s//+/ }"); done
  CUDA_VISIBLE_DEVICES=$gpu timeout -k 10 "$run_limit" "$foldtron" discourse train \
    --config configs/discourse/multigrained.yaml --device cuda --set "discourse.data=$data/corpus" \
    --set "discourse.encoder=$work/encoder" --set "discourse.seed=$seed" "${args[@]}" \
    --set "logging.metrics_file=$work/runs/$name-$seed.jsonl" > "$work/runs/$name-$seed.log" 2>&1
  local rc=$?
  echo "== $name seed $seed (GPU $gpu) rc=$rc: $(grep -E 'kept epoch|error' "$work/runs/$name-$seed.log" | tail -1 | cut -c1-220)"
  [[ $rc -eq 0 ]] || touch "$work/failed"
}
export -f one_run sets_of
export foldtron data work run_limit gpus deadline

if has runs; then
  [[ -d $work/encoder ]] || { echo "no encoder in $work/encoder: run the mlm part first" >&2; exit 1; }
  rm -f "$work"/runs/* "$work/failed"
  slot=0
  for seed in "${seeds[@]}"; do
    for name in "${runs[@]}"; do
      echo "$name $seed $slot"
      slot=$(( slot + 1 ))
    done
  done | xargs -P "$jobs" -L 1 bash -c 'one_run "$0" "$1" "$2"'
  [[ -f $work/failed ]] && status=1  # a run that failed or ran out of time
  : > "$out/results.jsonl"
  for f in "$work"/runs/*.jsonl; do
    base=$(basename "$f" .jsonl)
    python3 - "$f" "${base%-*}" "${base##*-}" >> "$out/results.jsonl" <<'PY'
import json, sys
records = [json.loads(l) for l in open(sys.argv[1])]
final = {r["split"]: r for r in records if "split" in r}
epochs = [r for r in records if "epoch" in r and "split" not in r]
if "test" in final:
    print(json.dumps({"run": sys.argv[2], "seed": int(sys.argv[3]), "epoch": final["test"]["epoch"],
                      "epochs": len(epochs), "seconds": sum(e["seconds"] for e in epochs),
                      "dev": {k: final["dev"][k] for k in ("accuracy", "macro_f1")}, "test": final["test"]}))
PY
  done
  python3 scripts/discourse_table.py "$out/results.jsonl"
fi
tar -czf "$out/logs.tar.gz" -C "$work" $(cd "$work" && ls *.log runs/* 2>/dev/null)
exit $status
