#!/usr/bin/env bash
# On the GPU machine: how long the reference model takes to start (issue 20's target: under 20 s
# for the 6.07 B parameters of mixtral-8x7b truncated to 4 layers, one H200), read off the
# trainer's startup line (model, gradient buffers and optimizer, data), at several host thread
# counts; then, with LOAD_STEPS set, the 8-rank CPU load run of docs/reliability.md on this
# machine's cores (scripts/load_run.py).
# Usage: scripts/gpu_startup.sh [output dir]; THREADS="8 16" picks the OMP_NUM_THREADS values;
# LOAD_STEPS=1000 LOAD_KILLS=3 [LOAD_SAVE_INTERVAL=100] adds the load run, limited to what is left of CALL_LIMIT (580 s)
# since the script started; SKIP_BUILD=1 reuses build-gpu/.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-/tmp}}
source scripts/gpu_env.sh
if [[ -z ${SKIP_BUILD:-} ]]; then
  # Line tables (-g1; C++ files, not the .cu kernels) so that a crash's stack names files and
  # lines; they stay in build-gpu's cache for later builds there (code generation is the same).
  GPU_CMAKE_ARGS="-DFOLDTRON_WERROR=OFF -DFOLDTRON_BUILD_TESTS=OFF -DCMAKE_CXX_FLAGS=-g1" scripts/gpu_build.sh -R '^$' > "$out/build.log" 2>&1
  echo "== build: rc=$?"
fi
[[ -x build-gpu/bin/foldtron ]] || { tail -40 "$out/build.log"; exit 1; }
for threads in ${THREADS:-8 16}; do
  OMP_NUM_THREADS=$threads step 240 build-gpu/bin/foldtron train --preset mixtral-8x7b --set model.num_layers=4 \
    --seq-length 4096 --micro-batch-size 2 --global-batch-size 2 --train-iters 2 --log-interval 1 \
    --set data.mock=true --device cuda > "$out/startup_threads$threads.log" 2>&1
  grep -E "startup|step 2/|error" "$out/startup_threads$threads.log" | cut -c1-250
done
if [[ -n ${LOAD_STEPS:-} ]]; then
  # What is left of a 10-minute device call (the build's time varies).
  left=$(( ${CALL_LIMIT:-580} - SECONDS ))
  if (( left < 30 )); then echo "== no time left for the load run (${left} s)"; exit 1; fi
  step "$left" python3 scripts/load_run.py --steps "$LOAD_STEPS" --save-interval "${LOAD_SAVE_INTERVAL:-100}" --kills "${LOAD_KILLS:-3}" --seed 2 \
    --foldtron build-gpu/bin/foldtron --workdir /tmp/foldtron_load --out "$out/load_run.json" > "$out/load_run.log" 2>&1
  tail -45 "$out/load_run.log"
  # A crash's stack (core/fault.cpp) gives foldtron's frames as offsets: name them while the
  # binary is here.
  for log in /tmp/foldtron_load/*/job*.log; do
    grep -q "stack:" "$log" || continue
    cp "$log" "$out/crash_$(basename "$(dirname "$log")")_$(basename "$log")"
    grep -oE 'bin/foldtron\(\+0x[0-9a-f]+\)' "$log" | grep -oE '0x[0-9a-f]+' | sort -u |
      xargs -r addr2line -C -f -i -e build-gpu/bin/foldtron >> "$out/crash_symbols.txt"
  done
fi
exit $status
