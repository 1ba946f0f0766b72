// The experts' weight gradients in one grouped GEMM on Hopper, into fp32 main gradients: for each
// expert g, out[g] = dy_g^T x_g, or out[g] += dy_g^T x_g when accumulating, where dy_g and x_g are
// the expert's rows of dy [R, m] and x [R, n] (bf16, row-major) and out[g] is fp32 [m, n],
// row-major. cuBLAS has no grouped call that adds bf16 products into fp32 (the grouped API of the
// cuBLAS in torch 2.11's CUDA 13 wheel answers NOT_SUPPORTED, docs/performance.md), so without
// this each expert is a GEMM of its own. Built from CUTLASS 3's pointer-array grouped GEMM (TMA,
// warp-specialized, persistent) for sm_90a, with an epilogue that reads the old fp32 values and
// writes the sum in place (beta 1; beta 0 writes without reading). The per-expert pointers, row
// counts and strides are made on the device from the row ends, so no count has to reach the host.
//
// Compiled only with FOLDTRON_WITH_GROUPED_WGRAD (CMake's FOLDTRON_CUTLASS_DIR); no CUDA header
// here. `stream` is a cudaStream_t; CUDA and CUTLASS failures throw std::runtime_error.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace foldtron {

// The kernel's tile shapes (M x N per thread-block tile, K 64; clusters of two along M) and
// warp-specialization: "cooperative" (two warp groups share a tile) or "pingpong" (each warp group
// has its own tile; one's epilogue runs under the other's main loop).
enum class WgradTiles { kCooperative128x256, kCooperative256x128, kPingpong128x128 };
inline constexpr WgradTiles kAllWgradTiles[] = {WgradTiles::kCooperative128x256, WgradTiles::kCooperative256x128,
                                                WgradTiles::kPingpong128x128};

// A tile shape and the order the persistent thread blocks take the tiles in: down M first
// (CUTLASS's default for grouped GEMMs) or along N first, in groups of `swizzle` (1, 2, 4 or 8)
// tiles across the other dimension.
struct WgradConfig {
  WgradTiles tiles = WgradTiles::kCooperative128x256;
  bool along_n = false;
  int swizzle = 1;
};
std::string wgrad_config_name(const WgradConfig& config);

// The CUTLASS version the kernel was built from ("4.7.0").
const char* grouped_wgrad_cutlass_version();

// Whether the current device runs the kernel (compute capability 9.0: the sm_90a build runs there
// only).
bool grouped_wgrad_supported();

// Device bytes a call with `groups` experts needs beside its operands: the per-expert argument
// arrays and CUTLASS's workspace (per-SM TMA descriptors), for the current device.
size_t grouped_wgrad_buffer_bytes(int groups, const WgradConfig& config);

// Whether the kernel's TMA loads take these operands: m and n positive multiples of 8 below 2^31,
// dy, x and out 16-byte aligned. CUTLASS checks none of it when the problem shapes stay on the
// device, and a TMA load off them faults.
bool grouped_wgrad_operands_fit(const void* dy, const void* x, const float* out, int64_t m, int64_t n);

// row_ends [groups] int32 on the device: expert g owns rows [row_ends[g-1], row_ends[g]) of dy and
// x (row_ends[-1] = 0). The operands fit (grouped_wgrad_operands_fit) and `buffer` is 128-byte
// aligned (torch's allocations are; else std::invalid_argument) and at least
// grouped_wgrad_buffer_bytes(groups, config) bytes on the device, not used by anything else until
// the stream reaches the end of the call. An expert without rows is left as it is, also when
// writing: the caller zeroes it.
void grouped_wgrad_cuda(const void* dy, const void* x, const int32_t* row_ends, float* out, int groups, int64_t m,
                        int64_t n, bool accumulate, void* buffer, const WgradConfig& config, void* stream);

}  // namespace foldtron
