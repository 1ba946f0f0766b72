#!/usr/bin/env bash
# On the GPU machine: the data pipeline's measurements.
#   build       scripts/gpu_build.sh without the test suites (build-gpu/)
#   preprocess  foldtron preprocess of DATA_DIR/changelogs.txt (60 MB of Debian changelogs) with
#               the 32,000-piece model DATA_DIR/spm32k.model at 1, 4, 8 and 16 workers: the
#               summary lines (tokens/s), and the outputs of 1 and 16 workers compared byte for byte
#   loader      the reference step (mixtral-8x7b truncated to 4 layers, sequence 4096, micro-batch
#               2, global batch 16, one GPU) on synthetic tokens and on the preprocessed
#               changelogs: the median step time of steps 6-15 and the data loader's share
#               (data_s / step_time_s), with a validation at step 15
# DATA_DIR (.gpu/data, carried) holds changelogs.txt.gz and spm32k.model, made on the CI machine:
#   find /usr/share/doc -name "changelog*.gz" | LC_ALL=C sort | xargs zcat | head -c 60000000 > changelogs.txt
#   gzip -k -1 changelogs.txt
#   foldtron tokenizer train --input changelogs.txt --model-prefix spm32k --vocab-size 32000 --input-sentence-size 300000
# Usage: scripts/gpu_data.sh [output dir]; PARTS="build preprocess loader" (the default).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-/tmp}}
OMP_NUM_THREADS=8 source scripts/gpu_env.sh
parts=${PARTS:-build preprocess loader}
data=${DATA_DIR:-.gpu/data}
work=${WORK_DIR:-/tmp/foldtron_data}
mkdir -p "$work"
nproc
# Carried compressed (the carry limit is 64 MiB).
[[ -f "$data/changelogs.txt" ]] || zcat "$data/changelogs.txt.gz" > "$data/changelogs.txt"

if has build; then
  GPU_CMAKE_ARGS="-DFOLDTRON_WERROR=OFF -DFOLDTRON_BUILD_TESTS=OFF" scripts/gpu_build.sh -R '^$' > "$out/build.log" 2>&1
  echo "== build rc=$?"
  [[ -x build-gpu/bin/foldtron ]] || { tail -40 "$out/build.log"; exit 1; }
fi

if has preprocess; then
  for workers in 1 4 8 16; do
    step 300 build-gpu/bin/foldtron preprocess --input "$data/changelogs.txt" --tokenizer "$data/spm32k.model" \
      --output-prefix "$work/changelogs_w$workers" --workers "$workers" --quiet > "$out/preprocess_w$workers.log" 2>&1
    grep -o "wrote.*" "$out/preprocess_w$workers.log" | cut -c1-400
  done
  cmp "$work/changelogs_w1.bin" "$work/changelogs_w16.bin" && cmp "$work/changelogs_w1.idx" "$work/changelogs_w16.idx" \
    && echo "== 1 and 16 workers: identical output"
fi

if has loader; then
  ref=(--preset mixtral-8x7b --set model.num_layers=4 --seq-length 4096 --micro-batch-size 2 --global-batch-size 16
    --train-iters 15 --log-interval 1 --device cuda)
  real=(--set "data.path=$work/changelogs_w16" --set data.tokenizer=sentencepiece
    --set "data.tokenizer_model=$data/spm32k.model" --set train.eval_interval=15 --set train.eval_iters=2)
  for name in mock real; do
    if [[ $name == mock ]]; then extra=(--set data.mock=true); else extra=("${real[@]}"); fi
    step 240 build-gpu/bin/foldtron train "${ref[@]}" "${extra[@]}" --metrics-file "$out/loader_$name.jsonl" \
      > "$out/loader_$name.log" 2>&1
    grep -E "data:|validation after|mean step|error" "$out/loader_$name.log" | cut -c1-300
    python3 - "$out/loader_$name.jsonl" "$name" <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
steps = [r for r in rows if "loss" in r and 6 <= r["step"] <= 15]
t = statistics.median(r["step_time_s"] for r in steps)
share = sum(r["data_s"] for r in steps) / sum(r["step_time_s"] for r in steps)
print(f"== {sys.argv[2]}: median step {t:.4f} s, MFU {statistics.median(r['mfu'] for r in steps) * 100:.2f}%, "
      f"data_s median {statistics.median(r['data_s'] for r in steps) * 1000:.3f} ms, loader share {share * 100:.3f}%")
PY
  done
fi
exit $status
