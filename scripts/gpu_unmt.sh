#!/usr/bin/env bash
# On the GPU machine: the translation experiment of docs/unmt.md (issue 18).
#   build  scripts/gpu_build.sh without the test suites (build-gpu/)
#   train  the three systems at once: UNMT on GPU 0, CUNMT on GPU 1 (0 with one GPU), the
#          supervised En-De system on GPU $SUP_GPU (default 1): configs/unmt/{unmt,cunmt,supervised}.yaml
#          for $STEPS steps (supervised: $SUP_STEPS; seed $SEED) or until $TRAIN_LIMIT seconds have
#          passed (SIGTERM: the trainer saves and stops), metrics in $OUT/<system>.jsonl,
#          checkpoints in $WORK_DIR/<system>
#   eval   each checkpoint translates both test sets (catalogs, descriptions) in both directions
#          (greedy, batches of 128, each run limited to $EVAL_LIMIT seconds); BLEU and chrF against the references, and of the copy
#          baseline (the source as its own translation), one JSON line each in $OUT/results.jsonl
# DATA_DIR (.gpu/unmt, carried) is scripts/unmt_data.sh's output plus the test and dev text files.
# Usage: scripts/gpu_unmt.sh [output dir]; PARTS="build train eval" (the default), STEPS=1500.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-/tmp}}
OMP_NUM_THREADS=4 source scripts/gpu_env.sh
parts=${PARTS:-build train eval}
data=${DATA_DIR:-.gpu/unmt}
work=${WORK_DIR:-/tmp/foldtron_unmt}
steps=${STEPS:-1500}
sup_steps=${SUP_STEPS:-1500}
seed=${SEED:-1}
limit=${TRAIN_LIMIT:-480}
sup_gpu=${SUP_GPU:-$(( gpus > 1 ? 1 : 0 ))}
mkdir -p "$work"
foldtron=build-gpu/bin/foldtron

if has build; then
  GPU_CMAKE_ARGS="-DFOLDTRON_WERROR=OFF -DFOLDTRON_BUILD_TESTS=OFF" scripts/gpu_build.sh -R '^$' > "$work/build.log" 2>&1
  echo "== build rc=$?"
  [[ -x $foldtron ]] || { tail -40 "$work/build.log"; exit 1; }
fi

systems=(unmt cunmt supervised)
gpu_of() { case $1 in unmt) echo 0 ;; cunmt) echo $(( gpus > 1 ? 1 : 0 )) ;; supervised) echo "$sup_gpu" ;; esac; }

if has train; then
  for system in "${systems[@]}"; do
    rm -rf "$work/$system"
    CUDA_VISIBLE_DEVICES=$(gpu_of "$system") timeout -k 10 "$limit" "$foldtron" train \
      --config "configs/unmt/$system.yaml" --device cuda \
      --train-iters "$([[ $system == supervised ]] && echo "$sup_steps" || echo "$steps")" \
      --set "translation.data=$data" --set "data.tokenizer_model=$data/spm.model" --set "train.seed=$seed" \
      --set "checkpoint.save=$work/$system" --metrics-file "$out/$system.jsonl" > "$out/$system.log" 2>&1 &
  done
  # 124: stopped by TRAIN_LIMIT (the trainer saved first); anything else is a failure.
  for job in $(jobs -p); do
    wait "$job"; rc=$?
    [[ $rc -eq 0 || $rc -eq 124 ]] || status=1
  done
  for system in "${systems[@]}"; do
    echo "== $system"
    grep -E "error|validation after|mean step|saved" "$out/$system.log" | tail -6 | cut -c1-300
    tail -2 "$out/$system.jsonl" | cut -c1-400
  done
fi

if has eval; then
  : > "$out/results.jsonl"
  rm -f "$work/failed"
  score() {  # system set direction hyp ref
    local bleu chrf
    bleu=$("$foldtron" bleu --ref "$5" --json < "$4")
    chrf=$("$foldtron" bleu --ref "$5" --chrf --json < "$4")
    echo "{\"system\": \"$1\", \"set\": \"$2\", \"direction\": \"$3\", \"bleu\": $bleu, \"chrf\": $chrf}" >> "$out/results.jsonl"
  }
  for set in catalogs descriptions; do
    score copy "$set" en-de "$data/test.$set.en" "$data/test.$set.de"
    score copy "$set" de-en "$data/test.$set.de" "$data/test.$set.en"
  done
  translate_all() {  # system: both test sets in both directions, one after another
    local system=$1 set pair
    for set in catalogs descriptions; do
      for pair in en-de de-en; do
        CUDA_VISIBLE_DEVICES=$(gpu_of "$system") timeout -k 5 "${EVAL_LIMIT:-100}" "$foldtron" translate \
          --load "$work/$system" --src-lang "${pair%-*}" --tgt-lang "${pair#*-}" --batch-size 128 --device cuda \
          --log-level warning --set "data.tokenizer_model=$data/spm.model" --set "translation.data=$data" \
          < "$data/test.$set.${pair%-*}" > "$work/$system.$set.$pair.hyp" 2>> "$work/translate.err"
        local rc=$?
        echo "== $system $set $pair rc=$rc"
        [[ $rc -eq 0 ]] || echo "translate failed" >> "$work/failed"
      done
    done
  }
  for system in "${systems[@]}"; do
    [[ -d $work/$system ]] && translate_all "$system" &
  done
  wait
  tail -5 "$work/translate.err"
  [[ -f $work/failed ]] && status=1
  for system in "${systems[@]}"; do
    [[ -d $work/$system ]] || { echo "== $system: no checkpoint"; continue; }
    for set in catalogs descriptions; do
      for pair in en-de de-en; do
        score "$system" "$set" "$pair" "$work/$system.$set.$pair.hyp" "$data/test.$set.${pair#*-}"
        echo "$system $set $pair: $(head -3 "$work/$system.$set.$pair.hyp" | cut -c1-120 | tr '\n' '|')"
      done
    done
    du -sh "$(ls -d "$work/$system"/iter_* | tail -1)"
  done
  python3 - "$out/results.jsonl" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    print(f"{r['system']:<11} {r['set']:<13} {r['direction']}  BLEU {r['bleu']['score']:6.2f}  chrF {r['chrf']['score']:6.2f}")
PY
fi
exit $status
