#!/usr/bin/env bash
# On the GPU machine: this tree against a baseline tree in one run (runs on different machines
# differ), so a change that must not slow training down is measured side by side.
#   build  both trees at once (the baseline from its own scripts/gpu_build.sh, no tests), then
#          this tree's unit tests
#   tests  this tree's GPU tests (--device=cuda, NCCL) at 1 rank and, with two GPUs, at 2
#   perf   the reference step, mixtral-8x7b truncated to 4 layers, sequence 4096, micro-batch 2,
#          bf16, dropless, one GPU, at global batch 2 and 16 (8 micro-batches), alternating this
#          tree and the baseline; prints the median step time and MFU of steps 6-15 of each
# The baseline is a source tree: git archive <commit> | tar -x -C .gpu/baseline (carry .gpu, which
# also holds the reference vectors in .gpu/reference). It builds into build-baseline/, outside
# .gpu: carrying .gpu again in a later call replaces that folder, builds included.
# Usage: scripts/gpu_regression.sh [output dir]; PARTS="build tests perf" (the default) picks the
# parts, BASELINE the baseline tree (.gpu/baseline), TESTS the test binaries of the tests part.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-/tmp}}
OMP_NUM_THREADS=8 source scripts/gpu_env.sh
baseline=${BASELINE:-.gpu/baseline}
parts=${PARTS:-build tests perf}

if has build; then
  # Warnings are reported, not fatal: the image's compiler may know warnings the CI's does not.
  (cd "$baseline" && GPU_CMAKE_ARGS="-DFOLDTRON_WERROR=OFF" BUILD_DIR="$OLDPWD/build-baseline" \
     scripts/gpu_build.sh -R '^$' > "$out/build_baseline.log" 2>&1) &
  GPU_CMAKE_ARGS="-DFOLDTRON_REFERENCE_DIR=$PWD/.gpu/reference -DFOLDTRON_WERROR=OFF" \
    scripts/gpu_build.sh -L unit > "$out/build.log" 2>&1
  echo "== this tree: build and unit tests rc=$?"
  wait
  echo "== baseline build: $([[ -x build-baseline/bin/foldtron ]] && echo ok || echo FAILED)"
  grep -E "tests passed|FAILED|warning:" "$out/build.log" | head -20
  [[ -x build-gpu/bin/foldtron ]] || { tail -40 "$out/build.log"; exit 1; }
fi

if has tests; then
  for np in 1 2; do
    [[ $np -gt $gpus ]] && break
    for t in ${TESTS:-test_hf_parity test_generation test_dense test_moe test_train test_seq2seq test_moe_train}; do
      step 150 $mpi -np "$np" build-gpu/tests/parallel/$t --device=cuda --gtest_brief=1 > "$out/${t}_np$np.log" 2>&1
      grep -E "PASSED|FAILED|SKIPPED|worst|layouts" "$out/${t}_np$np.log" | head -6
    done
  done
fi

if has perf; then
  ref=(--preset mixtral-8x7b --set model.num_layers=4 --seq-length 4096 --train-iters 15 --log-interval 1
    --set data.mock=true --device cuda --micro-batch-size 2)
  for gbs in 2 16; do
    for tree in new baseline; do
      binary=build-gpu/bin/foldtron
      [[ $tree == baseline ]] && binary=build-baseline/bin/foldtron
      name=${tree}_gbs$gbs
      step 200 $binary train "${ref[@]}" --global-batch-size "$gbs" --metrics-file "$out/$name.jsonl" > "$out/$name.log" 2>&1
      grep -E "model:|initialized|mean step|error" "$out/$name.log" | cut -c1-200
      python3 - "$out/$name.jsonl" "$name" <<'EOF'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
last = [r for r in rows if 6 <= r["step"] <= 15]
t = statistics.median(r["step_time_s"] for r in last)
mfu = statistics.median(r["mfu"] for r in last)
print(f"RESULT {sys.argv[2]}: median step {t:.4f} s, MFU {100 * mfu:.1f}%, peak {max(r['mem_gb'] for r in rows):.1f} GiB, "
      f"steps 6-15 of {len(rows)}")
EOF
    done
  done
fi
exit $status
