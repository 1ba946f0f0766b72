#!/usr/bin/env bash
# Configures and builds foldtron into build/ (or $BUILD_DIR) with warnings as errors.
# Extra arguments go to cmake, e.g. scripts/build.sh -DFOLDTRON_BUILD_BENCH=ON
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${BUILD_DIR:-build}
jobs=${JOBS:-$(nproc)}
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFOLDTRON_WERROR=ON "$@" >/dev/null
cmake --build "$build_dir" -j "$jobs"
