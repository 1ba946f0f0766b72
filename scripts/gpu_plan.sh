#!/usr/bin/env bash
# On the GPU machine: the measurements behind `foldtron plan` (docs/planner.md). The calibration
# (bench/calibrate_planner.py: GEMM, grouped-GEMM, attention and HBM rates; it runs while the
# build compiles) writes the hardware profile; then the layouts below train 15 steps each and
# their mean step and peak memory go to measured.txt, one line per layout: name, seconds, GiB,
# ranks, flags (what docs/planner/measured_h200.json lists and `foldtron plan --check` predicts).
# Usage: scripts/gpu_plan.sh [output dir]; PARTS="calibrate one" (the default; "two" adds the
# two-GPU layouts where two GPUs are present); RUNS="name ..." picks layouts by name; BINARY and
# KEEP_BINARY as in scripts/gpu_moe.sh. Each layout's log and metrics go to runs.tgz (a device call
# brings back at most 8 files).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-/tmp}}
OMP_NUM_THREADS=8 source scripts/gpu_env.sh
parts=${PARTS:-calibrate one}
calibration=
if has calibrate; then
  python3 bench/calibrate_planner.py --out "$out/h200.json" > "$out/calibrate.log" 2>&1 &
  calibration=$!
fi
if [[ -n ${BINARY:-} ]]; then
  mkdir -p build-gpu/bin && cp "$BINARY" build-gpu/bin/foldtron && chmod +x build-gpu/bin/foldtron
elif has one || has two; then
  BUILD_TARGETS=foldtron GPU_CMAKE_ARGS="-DFOLDTRON_WERROR=OFF" scripts/gpu_build.sh -R '^$' > "$out/build.log" 2>&1
  echo "== build: rc=$?"
  [[ -x build-gpu/bin/foldtron ]] || { tail -40 "$out/build.log"; exit 1; }
  [[ -n ${KEEP_BINARY:-} ]] && strip -o "$out/foldtron" build-gpu/bin/foldtron
fi
if [[ -n $calibration ]]; then
  wait "$calibration"; echo "== calibration: rc=$?"; tail -3 "$out/calibrate.log"
fi
ref="--preset mixtral-8x7b --set model.num_layers=4 --seq-length 4096 --train-iters 15 --log-interval 1 --set data.mock=true --device cuda"
long="--preset mixtral-8x7b --set model.num_layers=2 --train-iters 8 --log-interval 1 --set data.mock=true --device cuda"
# name ranks flags (one layout per line)
layouts_one="
ref_mb2 1 $ref --micro-batch-size 2 --global-batch-size 2
ref_gb16 1 $ref --micro-batch-size 2 --global-batch-size 16
ref_gb16_mb4 1 $ref --micro-batch-size 4 --global-batch-size 16
ref_mb1 1 $ref --micro-batch-size 1 --global-batch-size 1
ref_selective 1 $ref --micro-batch-size 2 --global-batch-size 2 --set model.recompute=selective
ref_full 1 $ref --micro-batch-size 2 --global-batch-size 2 --set model.recompute=full
ref_bf16moments 1 $ref --micro-batch-size 2 --global-batch-size 2 --set train.adam_moments_dtype=bf16
dense4_mb2 1 $ref --set model.architecture=llama --set moe.num_experts=0 --micro-batch-size 2 --global-batch-size 8
qwen2_2l_mb2 1 ${ref/mixtral-8x7b --set model.num_layers=4/qwen2-57b-a14b --set model.num_layers=2} --micro-batch-size 2 --global-batch-size 2
qwen2_2l_gb8 1 ${ref/mixtral-8x7b --set model.num_layers=4/qwen2-57b-a14b --set model.num_layers=2} --micro-batch-size 2 --global-batch-size 8
mixtral22b_2l_gb4 1 ${ref/mixtral-8x7b --set model.num_layers=4/mixtral-8x22b --set model.num_layers=2} --micro-batch-size 1 --global-batch-size 4
long16k_full 1 $long --seq-length 16384 --set model.max_position_embeddings=16384 --micro-batch-size 1 --global-batch-size 1 --set model.recompute=full
long32k_full 1 $long --seq-length 32768 --set model.max_position_embeddings=32768 --micro-batch-size 1 --global-batch-size 1 --set model.recompute=full
"
layouts_two="
ep2_gb4 2 $ref --micro-batch-size 2 --global-batch-size 4 --ep 2
ep2_gb32 2 $ref --micro-batch-size 2 --global-batch-size 32 --ep 2
tp2 2 $ref --micro-batch-size 2 --global-batch-size 2 --tp 2 --sequence-parallel
folded_gb16 2 $ref --micro-batch-size 2 --global-batch-size 16 --tp 2 --sequence-parallel --ep 2 --etp 1
pp2_gb16 2 $ref --micro-batch-size 2 --global-batch-size 16 --pp 2
"
layouts=
has one && layouts+=$layouts_one
has two && [[ $gpus -ge 2 ]] && layouts+=$layouts_two
: > "$out/measured.txt"
while read -r name ranks flags; do
  [[ -z $name ]] && continue
  [[ -n ${RUNS:-} && " $RUNS " != *" $name "* ]] && continue
  # shellcheck disable=SC2086  # flags are words
  log=$out/runs/$name.log
  mkdir -p "$out/runs"
  step 240 $mpi -np "$ranks" build-gpu/bin/foldtron train $flags --metrics-file "$out/runs/$name.jsonl" > "$log" 2>&1 < /dev/null
  seconds=$(grep -o "mean step after the first: [0-9.]*" "$log" | grep -o "[0-9.]*$")
  peak=$(grep -o "peak [0-9.]* GiB" "$log" | head -1 | grep -o "[0-9.]*")
  echo "$name ${seconds:-failed} ${peak:-?} $ranks $flags" | tee -a "$out/measured.txt"
  grep -E "mean step|error|out of memory" "$log" | head -3 | cut -c1-300
done <<< "$layouts"
[[ -d $out/runs ]] && tar czf "$out/runs.tgz" -C "$out" runs && rm -rf "$out/runs"
exit $status
