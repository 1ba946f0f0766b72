// What foldtron's kernels (.cu files only) share: fp32 arithmetic on bf16 or fp32 storage, 16-byte
// packs of either, a block-wide sum, and the host-side pick of the element type.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace foldtron {

__device__ __forceinline__ float to_float(float value) { return value; }
__device__ __forceinline__ float to_float(__nv_bfloat16 value) { return __bfloat162float(value); }

template <typename T>
__device__ __forceinline__ T from_float(float value);
template <>
__device__ __forceinline__ float from_float<float>(float value) {
  return value;
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float value) {
  return __float2bfloat16_rn(value);
}

// kSize elements of T loaded or stored in one access (kSize = 16 / sizeof(T): one 16-byte access).
template <typename T, int kWidth = 16 / static_cast<int>(sizeof(T))>
struct alignas(kWidth * sizeof(T)) Pack {
  static constexpr int kSize = kWidth;
  T v[kWidth];
};

// The sum of `value` over the block (blockDim.x a multiple of 32), returned to every thread.
// `shared` holds 33 floats; the closing barrier lets the caller reuse it at once.
__device__ __forceinline__ float block_sum(float value, float* shared) {
  for (int offset = 16; offset > 0; offset >>= 1) value += __shfl_xor_sync(0xffffffffu, value, offset);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) shared[warp] = value;
  __syncthreads();
  if (warp == 0) {
    float total = lane < static_cast<int>(blockDim.x / 32) ? shared[lane] : 0.0f;
    for (int offset = 16; offset > 0; offset >>= 1) total += __shfl_xor_sync(0xffffffffu, total, offset);
    if (lane == 0) shared[32] = total;
  }
  __syncthreads();
  const float total = shared[32];
  __syncthreads();
  return total;
}

// Calls launch with `data` as the pointer type it holds: bf16 or fp32.
template <typename Launch>
void with_type(bool bf16, const void* data, Launch&& launch) {
  if (bf16) {
    launch(static_cast<const __nv_bfloat16*>(data));
  } else {
    launch(static_cast<const float*>(data));
  }
}

// Blocks for a grid-stride loop over `units` (rows, tokens): one each, at most 2^20.
inline unsigned grid_of(int64_t units) {
  constexpr int64_t kMaxBlocks = int64_t{1} << 20;
  return static_cast<unsigned>(units < kMaxBlocks ? units : kMaxBlocks);
}

// Whether `pointer` allows accesses of `bytes` at a time.
inline bool aligned_to(const void* pointer, size_t bytes) { return reinterpret_cast<uintptr_t>(pointer) % bytes == 0; }

}  // namespace foldtron
