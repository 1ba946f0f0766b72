# foldtron_layer(NAME SOURCES <files> DEPS <targets> [TORCH] [PCH])
# One static library per layer of the design. TORCH links LibTorch; PCH (for layers whose files
# mostly include <torch/torch.h>) reuses one precompiled header of the torch includes, since a
# torch translation unit costs ~20 s. The header is forced into every file of such a layer, so
# layers with few torch files (core) compile without it.

set(FOLDTRON_WARNINGS -Wall -Wextra -Wpedantic $<$<CXX_COMPILER_ID:GNU>:-Wshadow=local> -Wnon-virtual-dtor)
if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_CXX_COMPILER_VERSION VERSION_GREATER_EQUAL 13)
  # GCC 13 at -O3 reports libstdc++'s own memmove inside std::vector as out of bounds (a known
  # false positive, seen on the GPU image in layers/embedding.cpp); keep it a warning there.
  list(APPEND FOLDTRON_WARNINGS -Wno-error=array-bounds -Wno-error=stringop-overflow)
endif()
if(FOLDTRON_WERROR)
  list(APPEND FOLDTRON_WARNINGS -Werror)
endif()

# The precompiled header, built once and reused by every torch layer.
function(foldtron_target_defaults target)
  target_compile_options(${target} PRIVATE ${FOLDTRON_WARNINGS})
  target_include_directories(${target} PUBLIC ${PROJECT_SOURCE_DIR}/src)
  target_compile_definitions(${target} PUBLIC FMT_HEADER_ONLY=1)
  if(FOLDTRON_WITH_CUDA)
    target_compile_definitions(${target} PUBLIC FOLDTRON_WITH_CUDA=1)
  endif()
  if(FOLDTRON_WITH_GROUPED_WGRAD)  # every target alike, so that the precompiled header is reused
    target_compile_definitions(${target} PUBLIC FOLDTRON_WITH_GROUPED_WGRAD=1)
  endif()
endfunction()

add_library(foldtron_pch STATIC EXCLUDE_FROM_ALL ${PROJECT_SOURCE_DIR}/src/core/pch.cpp)
foldtron_target_defaults(foldtron_pch)
target_link_libraries(foldtron_pch PUBLIC ${TORCH_LIBRARIES} fmt::fmt-header-only)
if(FOLDTRON_PCH)
  target_precompile_headers(foldtron_pch PRIVATE ${PROJECT_SOURCE_DIR}/src/core/pch.h)
endif()

# foldtron_unity(target): compile the target's files FOLDTRON_UNITY_BATCH at a time as one
# translation unit. Most of a torch file's compile time is instantiating and emitting the same
# torch templates and inline functions again; a batch does that once.
function(foldtron_unity target)
  if(FOLDTRON_UNITY_BATCH GREATER 0)
    set_target_properties(${target} PROPERTIES UNITY_BUILD ON UNITY_BUILD_BATCH_SIZE ${FOLDTRON_UNITY_BATCH})
  endif()
endfunction()

function(foldtron_layer name)
  cmake_parse_arguments(ARG "TORCH;PCH" "" "SOURCES;DEPS" ${ARGN})
  add_library(foldtron_${name} STATIC ${ARG_SOURCES})
  foldtron_target_defaults(foldtron_${name})
  foldtron_unity(foldtron_${name})
  target_link_libraries(foldtron_${name} PUBLIC ${ARG_DEPS} fmt::fmt-header-only)
  if(ARG_TORCH)
    target_link_libraries(foldtron_${name} PUBLIC ${TORCH_LIBRARIES})
    if(FOLDTRON_PCH AND ARG_PCH)
      target_precompile_headers(foldtron_${name} REUSE_FROM foldtron_pch)
    endif()
  endif()
endfunction()

# foldtron_cuda_kernels(NAME <.cu files>): foldtron_NAME, CUDA kernels with a plain C++ interface
# (no torch or CUDA headers in theirs), built with the CUDA runtime torch uses.
function(foldtron_cuda_kernels name)
  add_library(foldtron_${name} STATIC ${ARGN})
  target_include_directories(foldtron_${name} PRIVATE ${PROJECT_SOURCE_DIR}/src)
  target_compile_options(foldtron_${name} PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:-Xptxas=-warn-spills>)
  if(TARGET CUDA::cudart)
    target_link_libraries(foldtron_${name} PUBLIC CUDA::cudart)
  endif()
endfunction()
