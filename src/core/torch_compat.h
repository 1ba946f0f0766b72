// The one place where LibTorch version differences live: Debian's libtorch 1.13 (CPU, CI) and
// the torch 2.11 CUDA wheel (GPU machine). Later layers ask here whether SDPA, RMSNorm or
// grouped GEMM exist instead of testing versions themselves.
#pragma once

#include <string>

namespace foldtron::torch_compat {

// "1.13.1", as compiled against.
std::string torch_version();
int torch_major();
int torch_minor();

// Fused kernels that appeared after 1.13.
constexpr bool has_sdpa();        // at::scaled_dot_product_attention (torch >= 2.0)
constexpr bool has_grouped_mm();  // at::_grouped_mm (torch >= 2.8, CUDA)

// Built with the CUDA/NCCL paths, and how many CUDA devices this process sees (0 without).
bool built_with_cuda();
int cuda_device_count();
// Peak bytes the CUDA caching allocator has handed out on `device` (GiB); 0 without CUDA.
double cuda_peak_memory_gb(int device);
// Makes `device` the calling thread's current CUDA device: each rank's own GPU, since
// foldtron's kernels launch on the current device's stream. A no-op without CUDA.
void set_cuda_device(int device);

// A Kineto trace (CPU ops, and CUDA kernels and copies when `cuda`) from start_trace() to
// stop_trace(), written as a Chrome trace JSON file to `path`.
void start_trace(bool cuda);
void stop_trace(const std::string& path);

}  // namespace foldtron::torch_compat

#include "core/torch_compat_inl.h"
