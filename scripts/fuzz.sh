#!/usr/bin/env bash
# Fuzzes the readers of outside files with libFuzzer under ASan and UBSan (docs/reliability.md):
# builds the targets into build-asan/ (scripts/sanitize.sh's build, clang), then runs each for
# SECONDS on a working corpus grown from its seeds (tests/fuzz/corpus/<target>), and prints one
# line per target: executions, rate, corpus, and findings (an artifact file per crash, kept in
# build-asan/fuzz/<target>/). Exit status 1 when any target found something.
# Usage: scripts/fuzz.sh [SECONDS per target, default 600] [TARGET...]
#   FUZZ_RUNS=N ends each target after N executions instead, if that comes first (10000000: the
#   figure docs/reliability.md reports).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-600}
shift || true
all=(safetensors checkpoint_metadata indexed_dataset config_yaml mo conll pdtb hf_config)
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=("${all[@]}")
build_dir=${BUILD_DIR:-build-asan}
command -v clang++ >/dev/null || { echo "fuzz.sh: needs clang (apt-get install clang)" >&2; exit 1; }
CC=clang CXX=clang++ cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DFOLDTRON_SANITIZE=address,undefined -DFOLDTRON_FUZZ=ON >/dev/null
cmake --build "$build_dir" -j "${JOBS:-$(nproc)}" --target "${targets[@]/#/fuzz_}"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:malloc_limit_mb=2048}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
status=0
for target in "${targets[@]}"; do
  work="$build_dir/fuzz/$target"
  rm -rf "$work" && mkdir -p "$work/corpus"
  log="$work/log.txt"
  # -rss_limit_mb and malloc_limit_mb: an allocation a 64 KiB input could demand beyond 2 GiB is a finding.
  if "$build_dir/tests/fuzz/fuzz_$target" -max_total_time="$seconds" ${FUZZ_RUNS:+-runs=$FUZZ_RUNS} -max_len=65536 -rss_limit_mb=4096 \
      -malloc_limit_mb=2048 -timeout=20 -print_final_stats=1 -artifact_prefix="$work/" \
      "$work/corpus" "tests/fuzz/corpus/$target" >"$log" 2>&1; then
    verdict="0 findings"
  else
    verdict="FINDING: $(ls "$work" | grep -E '^(crash|oom|timeout|leak|slow-unit)-' | tr '\n' ' ')(see $log)"
    status=1
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
  printf 'fuzz %-20s %12s executions %8s/s  corpus %5s inputs  %s\n' "$target" "${runs:-?}" "${rate:-?}" \
    "$(ls "$work/corpus" | wc -l)" "$verdict"
done
exit $status
