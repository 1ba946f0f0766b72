# Finds every dependency of DESIGN.md's table. Nothing is downloaded or vendored: a missing
# package is a configure error that names the Debian package (scripts/setup.sh installs them all).

macro(foldtron_require found what package)
  if(NOT ${found})
    message(FATAL_ERROR "foldtron needs ${what}, which was not found. "
                        "Install it with scripts/setup.sh (Debian package ${package}), "
                        "or point CMAKE_PREFIX_PATH at it.")
  endif()
endmacro()

# --- LibTorch: Debian's libtorch-dev (CPU) here, the torch wheel (CUDA) on the GPU machine.
find_package(Torch QUIET)
foldtron_require(Torch_FOUND "LibTorch" "libtorch-dev")
set(FOLDTRON_TORCH_HAS_CUDA OFF)
if(TORCH_CUDA_LIBRARIES OR TARGET torch_cuda)
  set(FOLDTRON_TORCH_HAS_CUDA ON)
endif()
if(FOLDTRON_CUDA STREQUAL "auto")
  set(FOLDTRON_WITH_CUDA ${FOLDTRON_TORCH_HAS_CUDA})
elseif(FOLDTRON_CUDA)
  if(NOT FOLDTRON_TORCH_HAS_CUDA)
    message(FATAL_ERROR "FOLDTRON_CUDA=ON but the Torch found at ${Torch_DIR} has no CUDA. "
                        "Point CMAKE_PREFIX_PATH at a CUDA build of torch or use FOLDTRON_CUDA=auto.")
  endif()
  set(FOLDTRON_WITH_CUDA ON)
else()
  set(FOLDTRON_WITH_CUDA OFF)
endif()
message(STATUS "foldtron: Torch ${Torch_VERSION} at ${Torch_DIR}; CUDA paths: ${FOLDTRON_WITH_CUDA}")

# --- CUDA kernels of our own (fused AdamW): the toolkit torch's package found, sm_90 by default.
if(FOLDTRON_WITH_CUDA)
  if(NOT CMAKE_CUDA_COMPILER AND CUDAToolkit_NVCC_EXECUTABLE)
    set(CMAKE_CUDA_COMPILER ${CUDAToolkit_NVCC_EXECUTABLE})
  endif()
  if(NOT CMAKE_CUDA_ARCHITECTURES)
    set(CMAKE_CUDA_ARCHITECTURES 90)
  endif()
  # The shared runtime, the one torch uses: one CUDA runtime in the process.
  set(CMAKE_CUDA_RUNTIME_LIBRARY Shared)
  enable_language(CUDA)
  set(CMAKE_CUDA_STANDARD 17)
  set(CMAKE_CUDA_STANDARD_REQUIRED ON)
endif()

# --- CUTLASS (headers only): FOLDTRON_CUTLASS_DIR, its include directory, builds the experts'
# grouped fp32-accumulating weight-gradient GEMM (src/moe/grouped_wgrad_cuda.h, sm_90a). Without
# it each expert's weight gradient is a cuBLAS GEMM of its own. scripts/cutlass_headers.sh packs
# the pinned version; scripts/gpu_build.sh passes it when it is there.
set(FOLDTRON_CUTLASS_DIR "" CACHE PATH "CUTLASS's include directory: builds the grouped expert weight-gradient GEMM")
include(${CMAKE_CURRENT_LIST_DIR}/FoldtronCutlass.cmake)
foldtron_check_cutlass()

# --- NCCL: only for the CUDA build. The torch wheel ships it under site-packages/nvidia/nccl.
if(FOLDTRON_WITH_CUDA)
  find_path(NCCL_INCLUDE_DIR nccl.h HINTS ${NCCL_ROOT} ENV NCCL_ROOT PATH_SUFFIXES include)
  find_library(NCCL_LIBRARY NAMES nccl libnccl.so.2 HINTS ${NCCL_ROOT} ENV NCCL_ROOT PATH_SUFFIXES lib lib64)
  if(NOT NCCL_INCLUDE_DIR OR NOT NCCL_LIBRARY)
    message(FATAL_ERROR "The CUDA build needs NCCL (nccl.h and libnccl). Pass -DNCCL_ROOT=<dir>, "
                        "e.g. the torch wheel's site-packages/nvidia/nccl (scripts/gpu_build.sh does).")
  endif()
  add_library(foldtron_nccl INTERFACE)
  target_include_directories(foldtron_nccl SYSTEM INTERFACE ${NCCL_INCLUDE_DIR})
  target_link_libraries(foldtron_nccl INTERFACE ${NCCL_LIBRARY})
  message(STATUS "foldtron: NCCL ${NCCL_LIBRARY}")
endif()

# --- MPI: OpenMPI (libopenmpi-dev).
find_package(MPI QUIET COMPONENTS CXX)
foldtron_require(MPI_CXX_FOUND "MPI (C bindings used from C++)" "libopenmpi-dev")

# --- yaml-cpp, nlohmann-json, CLI11, fmt (header-only), sentencepiece.
find_package(yaml-cpp QUIET)
foldtron_require(yaml-cpp_FOUND "yaml-cpp" "libyaml-cpp-dev")
if(TARGET yaml-cpp::yaml-cpp)
  set(FOLDTRON_YAML_TARGET yaml-cpp::yaml-cpp)
else()
  set(FOLDTRON_YAML_TARGET yaml-cpp)
endif()

find_package(nlohmann_json 3.9 QUIET)
foldtron_require(nlohmann_json_FOUND "nlohmann-json" "nlohmann-json3-dev")

find_package(CLI11 QUIET)
foldtron_require(CLI11_FOUND "CLI11" "libcli11-dev")

find_package(fmt QUIET)
foldtron_require(fmt_FOUND "fmt" "libfmt-dev")

find_package(PkgConfig QUIET)
if(PkgConfig_FOUND)
  pkg_check_modules(SENTENCEPIECE QUIET IMPORTED_TARGET sentencepiece)
endif()
# foldtron_sentencepiece: the processor; foldtron_sentencepiece_train: also the trainer, where the
# installation has libsentencepiece_train (Debian's package does; without it, tokenizer training
# is an error naming the missing program).
if(SENTENCEPIECE_FOUND)
  add_library(foldtron_sentencepiece INTERFACE)
  target_link_libraries(foldtron_sentencepiece INTERFACE PkgConfig::SENTENCEPIECE)
  add_library(foldtron_sentencepiece_train INTERFACE)
  target_link_libraries(foldtron_sentencepiece_train INTERFACE PkgConfig::SENTENCEPIECE)
else()
  find_path(SENTENCEPIECE_INCLUDE_DIR sentencepiece_processor.h)
  find_library(SENTENCEPIECE_LIBRARY sentencepiece)
  find_library(SENTENCEPIECE_TRAIN_LIBRARY sentencepiece_train)
  set(SENTENCEPIECE_FOUND OFF)
  if(SENTENCEPIECE_INCLUDE_DIR AND SENTENCEPIECE_LIBRARY)
    set(SENTENCEPIECE_FOUND ON)
    add_library(foldtron_sentencepiece INTERFACE)
    target_include_directories(foldtron_sentencepiece SYSTEM INTERFACE ${SENTENCEPIECE_INCLUDE_DIR})
    target_link_libraries(foldtron_sentencepiece INTERFACE ${SENTENCEPIECE_LIBRARY})
    if(SENTENCEPIECE_TRAIN_LIBRARY)
      add_library(foldtron_sentencepiece_train INTERFACE)
      target_link_libraries(foldtron_sentencepiece_train INTERFACE foldtron_sentencepiece ${SENTENCEPIECE_TRAIN_LIBRARY})
    endif()
  endif()
endif()
foldtron_require(SENTENCEPIECE_FOUND "sentencepiece" "libsentencepiece-dev")

if(FOLDTRON_BUILD_TESTS)
  find_package(GTest QUIET)
  foldtron_require(GTest_FOUND "GoogleTest" "libgtest-dev")
endif()
if(FOLDTRON_BUILD_BENCH)
  find_package(benchmark QUIET)
  foldtron_require(benchmark_FOUND "Google Benchmark" "libbenchmark-dev")
endif()

# --- ICU (optional): Unicode general categories and case mapping for BLEU's intl tokenizer and
# lowercasing (src/tasks/unmt/bleu.cpp). Debian: libicu-dev.
find_package(ICU QUIET COMPONENTS uc)
set(FOLDTRON_HAVE_ICU ${ICU_FOUND})
if(NOT ICU_FOUND)
  message(STATUS "ICU not found: foldtron bleu --tokenize intl and --lowercase will be errors (install libicu-dev)")
endif()
