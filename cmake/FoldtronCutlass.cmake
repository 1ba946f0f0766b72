# foldtron_check_cutlass(): whether the build makes the experts' grouped weight-gradient GEMM
# (src/moe/grouped_wgrad_cuda.h, sm_90a): FOLDTRON_WITH_GROUPED_WGRAD ON when FOLDTRON_CUTLASS_DIR
# names CUTLASS 3's include directory in a build with CUDA paths; a configure error naming the
# fix when it is set otherwise. Also runs as a script (cmake -DFOLDTRON_CUTLASS_DIR=...
# -DFOLDTRON_WITH_CUDA=ON|OFF -P FoldtronCutlass.cmake), which the tests do for its errors.
function(foldtron_check_cutlass)
  set(FOLDTRON_WITH_GROUPED_WGRAD OFF PARENT_SCOPE)
  if(NOT FOLDTRON_CUTLASS_DIR)
    return()
  endif()
  if(NOT FOLDTRON_WITH_CUDA)
    message(FATAL_ERROR "FOLDTRON_CUTLASS_DIR is set but this build has no CUDA paths (the kernel is CUDA): "
                        "drop -DFOLDTRON_CUTLASS_DIR, or build against a CUDA torch.")
  endif()
  if(NOT EXISTS "${FOLDTRON_CUTLASS_DIR}/cutlass/gemm/group_array_problem_shape.hpp")
    message(FATAL_ERROR "FOLDTRON_CUTLASS_DIR=${FOLDTRON_CUTLASS_DIR} is not CUTLASS 3's include directory "
                        "(no cutlass/gemm/group_array_problem_shape.hpp): point it at <cutlass>/include, "
                        "e.g. what scripts/cutlass_headers.sh unpacks.")
  endif()
  set(FOLDTRON_WITH_GROUPED_WGRAD ON PARENT_SCOPE)
  message(STATUS "foldtron: CUTLASS at ${FOLDTRON_CUTLASS_DIR}: grouped expert weight gradients")
endfunction()

if(CMAKE_SCRIPT_MODE_FILE STREQUAL CMAKE_CURRENT_LIST_FILE)
  foldtron_check_cutlass()
endif()
