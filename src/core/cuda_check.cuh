// Checks of CUDA runtime calls for foldtron's own kernels (.cu files only): a failed call throws
// std::runtime_error naming the call, the file and line, and CUDA's description of the error. (A
// device failure is neither a user mistake nor, as a rule, a foldtron bug, so not InternalError;
// the entry point reports it like any other failure.)
#pragma once

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace foldtron {

inline void cuda_check(cudaError_t status, const char* what, const char* file, int line) {
  if (status != cudaSuccess) {
    throw std::runtime_error(std::string(what) + " failed at " + file + ":" + std::to_string(line) + ": " +
                             cudaGetErrorString(status));
  }
}

}  // namespace foldtron

// FT_CUDA_CHECK(cudaGetDevice(&device)); after a launch: FT_CUDA_CHECK(cudaGetLastError()).
#define FT_CUDA_CHECK(call) ::foldtron::cuda_check((call), #call, __FILE__, __LINE__)
