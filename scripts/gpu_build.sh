#!/usr/bin/env bash
# Builds foldtron on the GPU machine from what its image has (no installs): the torch wheel
# (CUDA) through its CMake prefix, NCCL from the wheel's nvidia/nccl, system CMake packages for
# the rest. Then prints `foldtron info` and runs the unit tests.
# Usage: scripts/gpu_build.sh [ctest arguments]      (build dir: build-gpu/, or $BUILD_DIR;
#        BUILD_TARGETS="foldtron test_dense" builds only those targets; CUTLASS_DIR=<include dir>
#        builds the grouped weight-gradient kernel from those headers, CUTLASS_DIR=none without it,
#        unset from .gpu/cutlass-include.tar.gz when that is there)
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${BUILD_DIR:-build-gpu}
python=${PYTHON:-python3}
torch_prefix=$("$python" -c 'import torch; print(torch.utils.cmake_prefix_path)')
site=$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
nccl_root=${NCCL_ROOT:-$site/nvidia/nccl}
# The wheel ships libnccl.so.2 without the unversioned link CMake looks for.
if [[ ! -e "$nccl_root/lib/libnccl.so" && -e "$nccl_root/lib/libnccl.so.2" ]]; then
  mkdir -p "$build_dir/nccl/lib"
  ln -sf "$nccl_root/lib/libnccl.so.2" "$build_dir/nccl/lib/libnccl.so"
  ln -sfn "$nccl_root/include" "$build_dir/nccl/include"
  nccl_root=$PWD/$build_dir/nccl
fi
# The experts' grouped weight-gradient kernel builds when CUTLASS's headers came along
# (.gpu/cutlass-include.tar.gz, made by scripts/cutlass_headers.sh) or CUTLASS_DIR names an include
# directory; CUTLASS_DIR=none builds without it (each expert's weight gradient a cuBLAS GEMM).
cutlass_dir=${CUTLASS_DIR:-}
if [[ -z $cutlass_dir && -f .gpu/cutlass-include.tar.gz ]]; then
  # Unpacked again only when the tarball is newer than the last unpacking (whose files carry the
  # unpacking's time, so that a new CUTLASS rebuilds what includes it).
  if [[ ! -f $build_dir/cutlass/.unpacked || .gpu/cutlass-include.tar.gz -nt $build_dir/cutlass/.unpacked ]]; then
    rm -rf "$build_dir/cutlass" && mkdir -p "$build_dir/cutlass"
    tar -xzmf .gpu/cutlass-include.tar.gz -C "$build_dir/cutlass"
    touch "$build_dir/cutlass/.unpacked"
  fi
  cutlass_dir=$PWD/$build_dir/cutlass/include
fi
[[ $cutlass_dir == none ]] && cutlass_dir=
export LD_LIBRARY_PATH=$nccl_root/lib:$("$python" -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DFOLDTRON_WERROR=ON \
  -DCMAKE_PREFIX_PATH="$torch_prefix" -DNCCL_ROOT="$nccl_root" -DFOLDTRON_CUDA=ON \
  -DCMAKE_CUDA_ARCHITECTURES=90 -DTORCH_CUDA_ARCH_LIST=9.0 -DFOLDTRON_CUTLASS_DIR="$cutlass_dir" ${GPU_CMAKE_ARGS:-}
cmake --build "$build_dir" -j "$(nproc)" ${BUILD_TARGETS:+--target $BUILD_TARGETS}
"$build_dir/bin/foldtron" info
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
(cd "$build_dir" && ctest --output-on-failure "$@")
