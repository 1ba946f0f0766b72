// The vocabulary cross-entropy's forward statistics and backward on CUDA (see cross_entropy_cuda.h).
//
// One block of 256 threads per row (a grid-stride loop over the rows); the threads stride over
// the row in 16-byte packs, so a warp reads 512 contiguous bytes at a time. Forward: each thread
// keeps a running max and the sum of exp(z - max) rescaled as the max grows (online softmax);
// the block merges the threads' pairs. Backward: each element once, read and written.
#include "layers/cross_entropy_cuda.h"

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <type_traits>

#include "core/cuda_check.cuh"
#include "core/cuda_types.cuh"

namespace foldtron {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

// A running max and the sum of exp(value - max) over the values seen.
struct MaxSum {
  float max;
  float sum;
};

// Adds one value. A NaN is carried in the sum (as torch's max would carry it into every value);
// -inf adds nothing.
__device__ __forceinline__ void add(MaxSum& acc, float value) {
  if (value > acc.max) {
    acc.sum = acc.sum * expf(acc.max - value) + 1.0f;
    acc.max = value;
  } else if (value != -INFINITY) {
    acc.sum += expf(value - acc.max);
  }
}

__device__ __forceinline__ MaxSum merge(MaxSum a, MaxSum b) {
  const float max = fmaxf(a.max, b.max);
  if (max == -INFINITY) return {max, a.sum + b.sum};  // both empty so far (a NaN sum stays)
  return {max, a.sum * expf(a.max - max) + b.sum * expf(b.max - max)};
}

__device__ __forceinline__ MaxSum warp_merge(MaxSum acc) {
  for (int offset = 16; offset > 0; offset >>= 1) {
    const MaxSum other{__shfl_xor_sync(0xffffffffu, acc.max, offset), __shfl_xor_sync(0xffffffffu, acc.sum, offset)};
    acc = merge(acc, other);
  }
  return acc;
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    cross_entropy_stats_kernel(const T* __restrict__ logits,        // [rows, vocab]
                               const int64_t* __restrict__ target,  // [rows]
                               float* __restrict__ max_out,         // [rows]
                               float* __restrict__ sum_out,         // [rows]
                               float* __restrict__ target_out,      // [rows]
                               int64_t rows, int64_t vocab, int64_t valid) {
  __shared__ MaxSum partial[kWarps];
  constexpr int kSize = Pack<T>::kSize;
  const int64_t full_packs = valid / kSize;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const T* z = logits + row * vocab;
    const auto* packs = reinterpret_cast<const Pack<T>*>(z);
    MaxSum acc{-INFINITY, 0.0f};
    for (int64_t j = threadIdx.x; j < full_packs; j += kThreads) {
      const Pack<T> pack = packs[j];
#pragma unroll
      for (int e = 0; e < kSize; ++e) add(acc, to_float(pack.v[e]));
    }
    for (int64_t j = full_packs * kSize + threadIdx.x; j < valid; j += kThreads) add(acc, to_float(z[j]));
    acc = warp_merge(acc);
    if (lane == 0) partial[warp] = acc;
    __syncthreads();
    if (warp == 0) {
      acc = lane < kWarps ? partial[lane] : MaxSum{-INFINITY, 0.0f};
      acc = warp_merge(acc);
      if (lane == 0) {
        max_out[row] = acc.max;
        sum_out[row] = acc.sum;
        const int64_t t = target[row];
        // A target among the padding columns (no token's) counts as -inf there, as in torch's path.
        target_out[row] = t < 0 ? 0.0f : t < valid ? to_float(z[t]) : -INFINITY;
      }
    }
    __syncthreads();  // partial is reused by the next row
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    cross_entropy_grad_kernel(const T* __restrict__ logits,        // [rows, vocab]
                              const int64_t* __restrict__ target,  // [rows]
                              const float* __restrict__ max,       // [rows]
                              const float* __restrict__ sum,       // [rows]
                              const float* __restrict__ scale,     // [rows]
                              T* __restrict__ grad,                // [rows, vocab]
                              int64_t rows, int64_t vocab, int64_t valid) {
  constexpr int kSize = Pack<T>::kSize;
  const int64_t packs = vocab / kSize;
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const float m = max[row], s = sum[row], g = scale[row];
    const int64_t t = target[row];
    const auto* in = reinterpret_cast<const Pack<T>*>(logits + row * vocab);
    auto* out = reinterpret_cast<Pack<T>*>(grad + row * vocab);
    for (int64_t j = threadIdx.x; j < packs; j += kThreads) {
      const Pack<T> pack = in[j];
      Pack<T> result;
#pragma unroll
      for (int e = 0; e < kSize; ++e) {
        const int64_t column = j * kSize + e;
        // The torch path's order: the softmax (exp, then the division), minus one at the target,
        // times the row's scale, one rounding to T.
        float value = column < valid ? expf(to_float(pack.v[e]) - m) / s : 0.0f;
        if (column == t) value -= 1.0f;
        result.v[e] = from_float<T>(value * g);
      }
      out[j] = result;
    }
  }
}

}  // namespace

void cross_entropy_stats_cuda(const void* logits, bool bf16, const int64_t* target, float* max, float* sum_exp,
                              float* target_logit, int64_t rows, int64_t vocab, int64_t valid, void* stream) {
  if (rows == 0) return;
  const auto s = static_cast<cudaStream_t>(stream);
  with_type(bf16, logits, [&](auto* typed) {
    using T = std::remove_cv_t<std::remove_pointer_t<decltype(typed)>>;
    cross_entropy_stats_kernel<T><<<grid_of(rows), kThreads, 0, s>>>(typed, target, max, sum_exp, target_logit, rows,
                                                                     vocab, valid);
  });
  FT_CUDA_CHECK(cudaGetLastError());  // the launch
}

void cross_entropy_grad_cuda(const void* logits, bool bf16, const int64_t* target, const float* max,
                             const float* sum, const float* scale, void* grad, int64_t rows, int64_t vocab,
                             int64_t valid, void* stream) {
  if (rows == 0) return;
  const auto s = static_cast<cudaStream_t>(stream);
  with_type(bf16, logits, [&](auto* typed) {
    using T = std::remove_cv_t<std::remove_pointer_t<decltype(typed)>>;
    cross_entropy_grad_kernel<T><<<grid_of(rows), kThreads, 0, s>>>(typed, target, max, sum, scale,
                                                                    static_cast<T*>(grad), rows, vocab, valid);
  });
  FT_CUDA_CHECK(cudaGetLastError());  // the launch
}

}  // namespace foldtron
