#!/usr/bin/env bash
# On the GPU machine: the translation experiment of docs/unmt.md (issue 18).
#   build  scripts/gpu_build.sh without the test suites (build-gpu/)
#   train  the three systems at once, each on its own GPU where there are two (UNMT on GPU 0,
#          CUNMT on GPU 1, supervised En-De on GPU $SUP_GPU): configs/unmt/{unmt,cunmt,supervised}.yaml
#          for $STEPS steps (seed $SEED), metrics in $OUT/<system>.jsonl, checkpoints in $WORK/<system>
#   eval   each checkpoint translates both test sets (catalogs, descriptions) in both directions
#          (greedy, batches of 128); BLEU and chrF against the references, and of the copy
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
seed=${SEED:-1}
limit=${TRAIN_LIMIT:-480}
sup_gpu=${SUP_GPU:-$(( gpus > 1 ? 1 : 0 ))}
mkdir -p "$work"
foldtron=build-gpu/bin/foldtron

if has build; then
  GPU_CMAKE_ARGS="-DFOLDTRON_WERROR=OFF -DFOLDTRON_BUILD_TESTS=OFF" scripts/gpu_build.sh -R '^$' > "$out/build.log" 2>&1
  echo "== build rc=$?"
  [[ -x $foldtron ]] || { tail -40 "$out/build.log"; exit 1; }
fi

systems=(unmt cunmt supervised)
gpu_of() { case $1 in unmt) echo 0 ;; cunmt) echo $(( gpus > 1 ? 1 : 0 )) ;; supervised) echo "$sup_gpu" ;; esac; }

if has train; then
  for system in "${systems[@]}"; do
    rm -rf "$work/$system"
    CUDA_VISIBLE_DEVICES=$(gpu_of "$system") timeout -k 10 "$limit" "$foldtron" train \
      --config "configs/unmt/$system.yaml" --device cuda --train-iters "$steps" \
      --set "translation.data=$data" --set "data.tokenizer_model=$data/spm.model" --set "train.seed=$seed" \
      --set "checkpoint.save=$work/$system" --metrics-file "$out/$system.jsonl" > "$out/$system.log" 2>&1 &
  done
  wait
  for system in "${systems[@]}"; do
    echo "== $system"
    grep -E "error|validation after|mean step|saved" "$out/$system.log" | tail -6 | cut -c1-300
    tail -2 "$out/$system.jsonl" | cut -c1-400
  done
fi

if has eval; then
  : > "$out/results.jsonl"
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
  for system in "${systems[@]}"; do
    [[ -d $work/$system ]] || { echo "== $system: no checkpoint"; continue; }
    for set in catalogs descriptions; do
      for pair in en-de de-en; do
        src=${pair%-*}; tgt=${pair#*-}
        CUDA_VISIBLE_DEVICES=$(gpu_of "$system") step 300 "$foldtron" translate --load "$work/$system" \
          --src-lang "$src" --tgt-lang "$tgt" --batch-size 128 --device cuda --log-level warning \
          --set "data.tokenizer_model=$data/spm.model" --set "translation.data=$data" \
          < "$data/test.$set.$src" > "$work/$system.$set.$pair.hyp" 2> "$out/translate.err"
        score "$system" "$set" "$pair" "$work/$system.$set.$pair.hyp" "$data/test.$set.$tgt"
        head -c 300 "$work/$system.$set.$pair.hyp"; echo
      done
    done
    du -sh "$work/$system"/iter_* | tail -1
  done
  python3 - "$out/results.jsonl" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    print(f"{r['system']:<11} {r['set']:<13} {r['direction']}  BLEU {r['bleu']['score']:6.2f}  chrF {r['chrf']['score']:6.2f}")
PY
fi
exit $status
