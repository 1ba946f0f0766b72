#!/usr/bin/env bash
# Builds foldtron and runs every test through CTest (unit, cli, and the MPI `parallel` tests).
# Usage: scripts/test.sh [ctest arguments, e.g. -L unit]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh
build_dir=${BUILD_DIR:-build}
# MPI tests run as root in CI and oversubscribe the 2 cores; one torch thread per rank.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
cd "$build_dir"
ctest --output-on-failure --timeout 900 -j "$(nproc)" "$@"
