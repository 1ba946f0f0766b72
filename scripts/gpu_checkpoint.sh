#!/usr/bin/env bash
# On the GPU machine: checkpoint save and load of the reference model (mixtral-8x7b truncated to
# 4 layers: 6.07e9 parameters, bf16 weights, fp32 main weights and moments, about 85 GB per
# checkpoint), sequence 4096, micro-batch 1, mock data.
#   build  scripts/gpu_build.sh without the test suites (build-gpu/)
#   one    one GPU: a synchronous save at the end of 4 steps; a resume from it (load, 2 steps);
#          an asynchronous save at step 4 of 8 (the steps while it writes against those before)
#   two    two GPUs, ep 2 (each rank writes and reads its half): the same three runs
# The disk holds one checkpoint of this size at a time, not two: each run's folder is removed
# when it is done, and in the asynchronous run a watcher removes the step-4 checkpoint as soon as
# it is complete (before the final save at step 8 writes the next).
# Usage: scripts/gpu_checkpoint.sh [output dir]; PARTS="build one two" (the default) picks parts
# (all three run about 15 minutes: two device calls, e.g. PARTS="build two", then PARTS=one on
# the warm machine); CKPT_DIR the folder to save into (/tmp/foldtron_ckpt); ASYNC=0 skips the
# asynchronous runs.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-/tmp}}
OMP_NUM_THREADS=8 source scripts/gpu_env.sh
parts=${PARTS:-build one two}
ckpt=${CKPT_DIR:-/tmp/foldtron_ckpt}
ref=(--preset mixtral-8x7b --set model.num_layers=4 --seq-length 4096 --micro-batch-size 1
  --set data.mock=true --device cuda --log-interval 1)

if has build; then
  GPU_CMAKE_ARGS="-DFOLDTRON_WERROR=OFF -DFOLDTRON_BUILD_TESTS=OFF" scripts/gpu_build.sh -R '^$' > "$out/build.log" 2>&1
  echo "== build rc=$?"
  [[ -x build-gpu/bin/foldtron ]] || { tail -40 "$out/build.log"; exit 1; }
fi
df -h "$(dirname "$ckpt")" | tail -1
free -g | head -2

drop_caches() {
  sync
  if echo 3 > /proc/sys/vm/drop_caches 2>/dev/null; then echo "== page cache dropped"; else echo "== page cache NOT dropped (no permission): loads may read cached pages"; fi
}

# The median step time of steps FIRST..LAST of a metrics file.
steps() {
  python3 - "$1" "$2" "$3" <<'EOF'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
first, last = int(sys.argv[2]), int(sys.argv[3])
t = [r["step_time_s"] for r in rows if first <= r["step"] <= last]
print(f"median step {first}-{last}: {statistics.median(t):.3f} s over {len(t)} steps ({', '.join(f'{x:.3f}' for x in t)})")
EOF
}

run_set() {  # name; the arrays launch (the words before the binary) and extra (more train flags)
  local name=$1
  rm -rf "$ckpt"
  step 300 "${launch[@]}" build-gpu/bin/foldtron train "${ref[@]}" "${extra[@]}" --train-iters 4 --save "$ckpt" \
    --metrics-file "$out/${name}_sync.jsonl" > "$out/${name}_sync.log" 2>&1
  grep -E "model:|saved|error" "$out/${name}_sync.log" | cut -c1-260
  steps "$out/${name}_sync.jsonl" 2 4
  du -sb "$ckpt"/iter_* 2>/dev/null
  drop_caches
  step 300 "${launch[@]}" build-gpu/bin/foldtron train "${ref[@]}" "${extra[@]}" --train-iters 6 --load "$ckpt" \
    > "$out/${name}_load.log" 2>&1
  grep -E "loaded|step 6/|error" "$out/${name}_load.log" | cut -c1-300
  rm -rf "$ckpt"
  [[ ${ASYNC:-1} == 1 ]] || return 0
  # Asynchronous: saved at step 4 in the background, and at the end (step 8).
  (while ! grep -qs iter_0000004 "$ckpt/latest"; do sleep 0.5; done; rm -rf "$ckpt/iter_0000004") &
  local watcher=$!
  step 400 "${launch[@]}" build-gpu/bin/foldtron train "${ref[@]}" "${extra[@]}" --train-iters 8 --save "$ckpt" --save-interval 4 \
    --set checkpoint.async=true --metrics-file "$out/${name}_async.jsonl" > "$out/${name}_async.log" 2>&1
  kill "$watcher" 2>/dev/null
  grep -E "copied|saved|error" "$out/${name}_async.log" | cut -c1-260
  steps "$out/${name}_async.jsonl" 2 4
  steps "$out/${name}_async.jsonl" 5 8
  rm -rf "$ckpt"
}

if has one; then
  echo "== one GPU"
  launch=(env CUDA_VISIBLE_DEVICES=0) extra=(--global-batch-size 1)
  run_set one
fi
if has two; then
  echo "== two GPUs, ep 2"
  [[ $gpus -ge 2 ]] || { echo "needs two GPUs"; exit 1; }
  launch=($mpi -np 2) extra=(--set parallel.ep=2 --global-batch-size 2)  # dp 2
  run_set two
fi
exit $status
