#!/usr/bin/env bash
# On the GPU machine: the translation experiment of docs/unmt.md (issue 18).
#   build  scripts/gpu_build.sh without the test suites (build-gpu/)
#   mlm    XLM's pretraining of UNMT (English, German) on GPU 0 and of CUNMT (English, German,
#          French) on GPU 1 (0 with one GPU): configs/unmt/mlm.yaml for $MLM_STEPS steps or
#          $MLM_LIMIT seconds, then foldtron unmt init-decoder (the decoder copies the encoder)
#   train  the systems of $SYSTEMS (default: unmt cunmt supervised) at once: UNMT on GPU 0, CUNMT
#          on GPU 1, the supervised En-De system on GPU $SUP_GPU (default 1):
#          configs/unmt/{unmt,cunmt,supervised}.yaml for $STEPS steps (supervised: $SUP_STEPS;
#          seed $SEED) or until $TRAIN_LIMIT seconds have passed (SIGTERM: the trainer saves and
#          stops); UNMT and CUNMT start from their pretraining when the mlm part made it
#   eval   each checkpoint translates both test sets (catalogs, descriptions) in both directions
#          (greedy, batches of 128, all at once, each limited to $EVAL_LIMIT seconds); BLEU and
#          chrF against the references, and of the copy baseline (the source as its own
#          translation), one JSON line each in $OUT/results.jsonl
# Metrics in $OUT/<run>.jsonl, the logs in $OUT/logs.tar.gz, checkpoints in $WORK_DIR.
# DATA_DIR (.gpu/unmt, carried) is scripts/unmt_data.sh's output plus the test and dev text files.
# Usage: scripts/gpu_unmt.sh [output dir]; PARTS="build mlm train eval" (the default).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-/tmp}}
OMP_NUM_THREADS=4 source scripts/gpu_env.sh
parts=${PARTS:-build mlm train eval}
data=${DATA_DIR:-.gpu/unmt}
work=${WORK_DIR:-/tmp/foldtron_unmt}
steps=${STEPS:-1500}
sup_steps=${SUP_STEPS:-1500}
seed=${SEED:-1}
limit=${TRAIN_LIMIT:-480}
mlm_steps=${MLM_STEPS:-2000}
mlm_limit=${MLM_LIMIT:-150}
read -r -a systems <<< "${SYSTEMS:-unmt cunmt supervised}"
sup_gpu=${SUP_GPU:-$(( gpus > 1 ? 1 : 0 ))}
mkdir -p "$work"
rm -f "$work"/*.log "$work/translate.err"  # the logs archived at the end are this call's only
foldtron=build-gpu/bin/foldtron

if has build; then
  GPU_CMAKE_ARGS="-DFOLDTRON_WERROR=OFF -DFOLDTRON_BUILD_TESTS=OFF" scripts/gpu_build.sh -R '^$' > "$work/build.log" 2>&1
  echo "== build rc=$?"
  [[ -x $foldtron ]] || { tail -40 "$work/build.log"; exit 1; }
fi

gpu_of() { case $1 in unmt) echo 0 ;; cunmt) echo $(( gpus > 1 ? 1 : 0 )) ;; supervised) echo "$sup_gpu" ;; esac; }

common=(--device cuda --set "translation.data=$data" --set "data.tokenizer_model=$data/spm.model"
        --set "train.seed=$seed")

if has mlm; then
  for system in "${systems[@]}"; do
    [[ $system == supervised ]] && continue
    languages=$([[ $system == cunmt ]] && echo "en de fr" || echo "en de")
    rm -rf "$work/mlm_$system" "$work/init_$system"
    (
      CUDA_VISIBLE_DEVICES=$(gpu_of "$system") timeout -k 10 "$mlm_limit" "$foldtron" train \
        --config configs/unmt/mlm.yaml "${common[@]}" --train-iters "$mlm_steps" \
        --set "translation.mlm=$languages" --set "checkpoint.save=$work/mlm_$system" \
        --metrics-file "$out/mlm_$system.jsonl" > "$work/mlm_$system.log" 2>&1
      rc=$?
      "$foldtron" unmt init-decoder --load "$work/mlm_$system" --output "$work/init_$system" \
        >> "$work/mlm_$system.log" 2>&1
      echo "== mlm $system ($languages): train rc=$rc, init-decoder rc=$?"
    ) &
  done
  wait
  for system in "${systems[@]}"; do
    [[ -f $work/mlm_$system.log ]] || continue
    grep -E "error|validation after|mean step|saved|copied" "$work/mlm_$system.log" | tail -5 | cut -c1-300
    [[ -d $work/init_$system ]] || status=1
  done
fi

if has train; then
  for system in "${systems[@]}"; do
    rm -rf "$work/$system"
    init=()
    [[ -d $work/init_$system ]] && init=(--set "checkpoint.load=$work/init_$system")
    echo "== $system starts from ${init[1]:-random initialization}"
    CUDA_VISIBLE_DEVICES=$(gpu_of "$system") timeout -k 10 "$limit" "$foldtron" train \
      --config "configs/unmt/$system.yaml" "${common[@]}" "${init[@]}" \
      --train-iters "$([[ $system == supervised ]] && echo "$sup_steps" || echo "$steps")" \
      --set "checkpoint.save=$work/$system" --metrics-file "$out/$system.jsonl" > "$work/$system.log" 2>&1 &
  done
  # 124: stopped by TRAIN_LIMIT (the trainer saved first); anything else is a failure.
  for job in $(jobs -p); do
    wait "$job"; rc=$?
    [[ $rc -eq 0 || $rc -eq 124 ]] || status=1
  done
  for system in "${systems[@]}"; do
    echo "== $system"
    grep -E "error|loaded|validation after|mean step|saved" "$work/$system.log" | tail -6 | cut -c1-300
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
  translate_one() {  # system set pair
    local system=$1 set=$2 pair=$3
    CUDA_VISIBLE_DEVICES=$(gpu_of "$system") timeout -k 5 "${EVAL_LIMIT:-100}" "$foldtron" translate \
      --load "$work/$system" --src-lang "${pair%-*}" --tgt-lang "${pair#*-}" --batch-size 128 --device cuda \
      --log-level warning --set "data.tokenizer_model=$data/spm.model" --set "translation.data=$data" \
      < "$data/test.$set.${pair%-*}" > "$work/$system.$set.$pair.hyp" 2>> "$work/translate.err"
    local rc=$?
    echo "== $system $set $pair rc=$rc"
    [[ $rc -eq 0 ]] || echo "translate failed" >> "$work/failed"
  }
  for system in "${systems[@]}"; do
    [[ -d $work/$system ]] || continue
    for set in catalogs descriptions; do
      for pair in en-de de-en; do translate_one "$system" "$set" "$pair" & done
    done
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
tar -czf "$out/logs.tar.gz" -C "$work" $(cd "$work" && ls *.log translate.err 2>/dev/null)
exit $status
