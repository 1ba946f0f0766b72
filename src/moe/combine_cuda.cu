// The combine's kernels on CUDA (see combine_cuda.h).
//
// Forward: one block of 256 threads per token (a grid-stride loop over the tokens); its threads
// walk the token's columns in 16-byte packs (one element at a time where a row is not whole packs
// or a pointer is not aligned to them) and add up the copies' weighted values in fp32. Backward:
// one block per row: the row's gradient written pack by pack, the dot product with the output
// gradient summed over the block.
#include "moe/combine_cuda.h"

#include <initializer_list>
#include <type_traits>

#include "core/cuda_check.cuh"
#include "core/cuda_types.cuh"

namespace foldtron {
namespace {

constexpr int kThreads = 256;

template <typename T, int kWidth>
__global__ void __launch_bounds__(kThreads)
    weighted_sum_kernel(const T* __restrict__ rows,               // [R, hidden]
                        const float* __restrict__ weights,        // [R]
                        const int64_t* __restrict__ rows_of_token, // [tokens, copies]
                        T* __restrict__ out,                      // [tokens, hidden]
                        int64_t tokens, int copies, int64_t hidden) {
  using Unit = Pack<T, kWidth>;
  const int64_t units = hidden / kWidth;
  for (int64_t t = blockIdx.x; t < tokens; t += gridDim.x) {
    const int64_t* copy_rows = rows_of_token + t * copies;
    for (int64_t u = threadIdx.x; u < units; u += kThreads) {
      float sum[kWidth] = {};
      for (int j = 0; j < copies; ++j) {
        const int64_t r = copy_rows[j];
        const float w = weights[r];
        const Unit x = reinterpret_cast<const Unit*>(rows + r * hidden)[u];
#pragma unroll
        for (int e = 0; e < kWidth; ++e) sum[e] += w * to_float(x.v[e]);
      }
      Unit y;
#pragma unroll
      for (int e = 0; e < kWidth; ++e) y.v[e] = from_float<T>(sum[e]);
      reinterpret_cast<Unit*>(out + t * hidden)[u] = y;
    }
  }
}

template <typename T, int kWidth>
__global__ void __launch_bounds__(kThreads)
    weighted_sum_backward_kernel(const T* __restrict__ rows,              // [R, hidden]
                                 const float* __restrict__ weights,       // [R]
                                 const int64_t* __restrict__ token_index, // [R]
                                 const T* __restrict__ grad_out,          // [tokens, hidden]
                                 T* __restrict__ grad_rows,               // [R, hidden]
                                 float* __restrict__ grad_weights,        // [R]
                                 int64_t num_rows, int64_t hidden) {
  __shared__ float shared[33];
  using Unit = Pack<T, kWidth>;
  const int64_t units = hidden / kWidth;
  for (int64_t r = blockIdx.x; r < num_rows; r += gridDim.x) {
    const float w = weights[r];
    const auto* dy = reinterpret_cast<const Unit*>(grad_out + token_index[r] * hidden);
    const auto* x = reinterpret_cast<const Unit*>(rows + r * hidden);
    auto* dx = reinterpret_cast<Unit*>(grad_rows + r * hidden);
    float dot = 0.0f;
    for (int64_t u = threadIdx.x; u < units; u += kThreads) {
      const Unit g = dy[u], v = x[u];
      Unit d;
#pragma unroll
      for (int e = 0; e < kWidth; ++e) {
        const float ge = to_float(g.v[e]);
        d.v[e] = from_float<T>(w * ge);
        dot += ge * to_float(v.v[e]);
      }
      dx[u] = d;
    }
    dot = block_sum(dot, shared);
    if (threadIdx.x == 0) grad_weights[r] = dot;
  }
}

// Calls launch with the element type of `rows` and the width the pointers allow: 16-byte packs
// where every row is whole packs and every pointer aligned to them, else one element.
template <typename Launch>
void with_width(bool bf16, const void* rows, int64_t hidden, std::initializer_list<const void*> others,
                Launch&& launch) {
  with_type(bf16, rows, [&](auto* typed) {
    using T = std::remove_cv_t<std::remove_pointer_t<decltype(typed)>>;
    constexpr int kWide = Pack<T>::kSize;
    bool wide = hidden % kWide == 0 && aligned_to(rows, 16);
    for (const void* other : others) wide = wide && aligned_to(other, 16);
    if (wide) {
      launch(typed, std::integral_constant<int, kWide>{});
    } else {
      launch(typed, std::integral_constant<int, 1>{});
    }
  });
}

}  // namespace

void weighted_sum_copies_cuda(const void* rows, bool bf16, const float* weights, const int64_t* rows_of_token,
                              void* out, int64_t tokens, int64_t copies, int64_t hidden, void* stream) {
  if (tokens == 0 || hidden == 0) return;
  const auto s = static_cast<cudaStream_t>(stream);
  with_width(bf16, rows, hidden, {out}, [&](auto* typed, auto width) {
    using T = std::remove_cv_t<std::remove_pointer_t<decltype(typed)>>;
    weighted_sum_kernel<T, decltype(width)::value><<<grid_of(tokens), kThreads, 0, s>>>(
        typed, weights, rows_of_token, static_cast<T*>(out), tokens, static_cast<int>(copies), hidden);
  });
  FT_CUDA_CHECK(cudaGetLastError());  // the launch
}

void weighted_sum_copies_backward_cuda(const void* rows, bool bf16, const float* weights, const int64_t* token_index,
                                       const void* grad_out, void* grad_rows, float* grad_weights, int64_t num_rows,
                                       int64_t hidden, void* stream) {
  if (num_rows == 0) return;
  const auto s = static_cast<cudaStream_t>(stream);
  with_width(bf16, rows, hidden, {grad_out, grad_rows}, [&](auto* typed, auto width) {
    using T = std::remove_cv_t<std::remove_pointer_t<decltype(typed)>>;
    weighted_sum_backward_kernel<T, decltype(width)::value><<<grid_of(num_rows), kThreads, 0, s>>>(
        typed, weights, token_index, static_cast<const T*>(grad_out), static_cast<T*>(grad_rows), grad_weights,
        num_rows, hidden);
  });
  FT_CUDA_CHECK(cudaGetLastError());  // the launch
}

}  // namespace foldtron
