#!/usr/bin/env bash
# Builds foldtron with clang and sanitizers and runs tests under them (docs/reliability.md).
#   scripts/sanitize.sh address [ctest args]  ASan + UBSan into build-asan/ (also the libFuzzer
#                                             targets scripts/fuzz.sh runs); default tests: unit,
#                                             cli and parallel (the multi-rank ones under mpirun)
#   scripts/sanitize.sh thread [ctest args]   TSan into build-tsan/; default tests: the
#                                             communication layer's (MPI backend, abort paths)
# A report fails its test (UBSan does not recover; ASan and TSan end the process). Leak checking
# is off: OpenMPI and torch's static registries are never freed at exit by design.
set -euo pipefail
cd "$(dirname "$0")/.."
kind=${1:-address}
shift || true
command -v clang++ >/dev/null || { echo "sanitize.sh: needs clang (apt-get install clang)" >&2; exit 1; }
case "$kind" in
  address)
    build_dir=${BUILD_DIR:-build-asan}
    flags=(-DFOLDTRON_SANITIZE=address,undefined -DFOLDTRON_FUZZ=ON)
    default_tests=(-L "unit|cli|parallel")
    ;;
  thread)
    build_dir=${BUILD_DIR:-build-tsan}
    flags=(-DFOLDTRON_SANITIZE=thread)
    default_tests=(-R "^(comm|abort_on|groups|mappings)")
    ;;
  *)
    echo "sanitize.sh: unknown kind '$kind'; use address or thread" >&2
    exit 2
    ;;
esac
CC=clang CXX=clang++ cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "${flags[@]}" >/dev/null
cmake --build "$build_dir" -j "${JOBS:-$(nproc)}"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:abort_on_error=1:print_summary=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1}
cd "$build_dir"
if [[ $# -eq 0 ]]; then set -- "${default_tests[@]}"; fi
ctest --output-on-failure --timeout 1800 -j "$(nproc)" "$@"
