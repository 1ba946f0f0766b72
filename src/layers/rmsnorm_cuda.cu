// RMSNorm forward and backward on CUDA (see rmsnorm_cuda.h).
//
// A row is hidden / 8 packs of 8 bf16 (16-byte loads); a block of up to 512 threads holds a
// whole row, each thread kPer packs (kPer <= 4). Forward: one row per block iteration, a block
// sum of squares, then the normalized row. Backward: a grid of a few blocks per SM walks the
// rows; each thread keeps the weight-gradient sums of its columns in registers and writes them
// once, to its block's row of dw_partial.
#include "layers/rmsnorm_cuda.h"

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <string>
#include <type_traits>

#include "core/cuda_check.cuh"
#include "core/cuda_types.cuh"

namespace foldtron {
namespace {

constexpr int kPack = 8;            // bf16 per 16-byte load
constexpr int kMaxThreads = 512;

using BfPack = Pack<__nv_bfloat16>;
static_assert(BfPack::kSize == kPack);

__device__ __forceinline__ float rounded(float value) { return __bfloat162float(__float2bfloat16_rn(value)); }

template <int kPer>
__global__ void __launch_bounds__(kMaxThreads)
    rmsnorm_forward_kernel(const BfPack* __restrict__ x,       // [rows, packs]
                           const BfPack* __restrict__ weight,  // [packs]
                           BfPack* __restrict__ y,             // [rows, packs]
                           float* __restrict__ rstd,         // [rows]
                           int64_t rows, int64_t packs, float eps) {
  __shared__ float shared[33];
  const float inverse_hidden = 1.0f / static_cast<float>(packs * kPack);
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    BfPack xs[kPer];
    float squares = 0.0f;
#pragma unroll
    for (int k = 0; k < kPer; ++k) {
      const int64_t j = threadIdx.x + static_cast<int64_t>(k) * blockDim.x;
      if (j >= packs) continue;
      xs[k] = x[row * packs + j];
#pragma unroll
      for (int e = 0; e < kPack; ++e) {
        const float value = __bfloat162float(xs[k].v[e]);
        squares += value * value;
      }
    }
    const float r = rsqrtf(block_sum(squares, shared) * inverse_hidden + eps);
    if (threadIdx.x == 0) rstd[row] = r;
#pragma unroll
    for (int k = 0; k < kPer; ++k) {
      const int64_t j = threadIdx.x + static_cast<int64_t>(k) * blockDim.x;
      if (j >= packs) continue;
      const BfPack w = weight[j];
      BfPack out;
#pragma unroll
      for (int e = 0; e < kPack; ++e) {
        const float normed = rounded(__bfloat162float(xs[k].v[e]) * r);
        out.v[e] = __float2bfloat16_rn(__bfloat162float(w.v[e]) * normed);
      }
      y[row * packs + j] = out;
    }
  }
}

template <int kPer>
__global__ void __launch_bounds__(kMaxThreads)
    rmsnorm_backward_kernel(const BfPack* __restrict__ dy,      // [rows, packs]
                            const BfPack* __restrict__ x,       // [rows, packs]
                            const BfPack* __restrict__ weight,  // [packs]
                            const float* __restrict__ rstd,   // [rows]
                            BfPack* __restrict__ dx,            // [rows, packs]
                            float* __restrict__ dw_partial,   // [gridDim.x, packs * 8]
                            int64_t rows, int64_t packs) {
  __shared__ float shared[33];
  const float inverse_hidden = 1.0f / static_cast<float>(packs * kPack);
  float dw[kPer][kPack];
#pragma unroll
  for (int k = 0; k < kPer; ++k) {
#pragma unroll
    for (int e = 0; e < kPack; ++e) dw[k][e] = 0.0f;
  }
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const float r = rstd[row];
    BfPack xs[kPer], gs[kPer];
    float dot = 0.0f;  // sum of g * xhat over the row
#pragma unroll
    for (int k = 0; k < kPer; ++k) {
      const int64_t j = threadIdx.x + static_cast<int64_t>(k) * blockDim.x;
      if (j >= packs) continue;
      xs[k] = x[row * packs + j];
      gs[k] = dy[row * packs + j];
      const BfPack w = weight[j];
#pragma unroll
      for (int e = 0; e < kPack; ++e) {
        const float xhat = __bfloat162float(xs[k].v[e]) * r;
        const float grad = __bfloat162float(gs[k].v[e]);
        dot += grad * __bfloat162float(w.v[e]) * xhat;
        dw[k][e] += grad * rounded(xhat);
      }
    }
    const float mean_dot = block_sum(dot, shared) * inverse_hidden;
#pragma unroll
    for (int k = 0; k < kPer; ++k) {
      const int64_t j = threadIdx.x + static_cast<int64_t>(k) * blockDim.x;
      if (j >= packs) continue;
      const BfPack w = weight[j];
      BfPack out;
#pragma unroll
      for (int e = 0; e < kPack; ++e) {
        const float xhat = __bfloat162float(xs[k].v[e]) * r;
        const float g = __bfloat162float(gs[k].v[e]) * __bfloat162float(w.v[e]);
        out.v[e] = __float2bfloat16_rn(r * (g - xhat * mean_dot));
      }
      dx[row * packs + j] = out;
    }
  }
#pragma unroll
  for (int k = 0; k < kPer; ++k) {
    const int64_t j = threadIdx.x + static_cast<int64_t>(k) * blockDim.x;
    if (j >= packs) continue;
#pragma unroll
    for (int e = 0; e < kPack; ++e) dw_partial[blockIdx.x * packs * kPack + j * kPack + e] = dw[k][e];
  }
}

struct Shape {
  int threads;  // a multiple of 32
  int per;      // packs per thread, 1..4
};

Shape shape_of(int64_t hidden) {
  if (hidden % kPack != 0 || hidden <= 0 || hidden > kRmsNormCudaMaxHidden) {  // the caller's guard checks this
    throw std::invalid_argument("rmsnorm_cuda: hidden size " + std::to_string(hidden) +
                                " is not a positive multiple of 8 up to 16384");
  }
  const int64_t packs = hidden / kPack;
  const int64_t per = (packs + kMaxThreads - 1) / kMaxThreads;
  const int64_t threads = ((packs + per - 1) / per + 31) / 32 * 32;
  return {static_cast<int>(threads), static_cast<int>(per)};
}

template <typename Launch>
void dispatch_per(int per, Launch&& launch) {
  switch (per) {
    case 1: launch(std::integral_constant<int, 1>{}); break;
    case 2: launch(std::integral_constant<int, 2>{}); break;
    case 3: launch(std::integral_constant<int, 3>{}); break;
    default: launch(std::integral_constant<int, 4>{}); break;
  }
}

}  // namespace

void rmsnorm_forward_cuda(const void* x, const void* weight, void* y, float* rstd, int64_t rows, int64_t hidden,
                          double eps, void* stream) {
  const Shape shape = shape_of(hidden);
  if (rows == 0) return;
  const auto grid = static_cast<unsigned>(rows < (int64_t{1} << 30) ? rows : (int64_t{1} << 30));
  const auto s = static_cast<cudaStream_t>(stream);
  dispatch_per(shape.per, [&](auto per) {
    rmsnorm_forward_kernel<decltype(per)::value><<<grid, shape.threads, 0, s>>>(
        static_cast<const BfPack*>(x), static_cast<const BfPack*>(weight), static_cast<BfPack*>(y), rstd, rows,
        hidden / kPack, static_cast<float>(eps));
  });
  FT_CUDA_CHECK(cudaGetLastError());  // the launch
}

int64_t rmsnorm_backward_blocks(int64_t rows) {
  int device = 0, sms = 0;
  FT_CUDA_CHECK(cudaGetDevice(&device));
  FT_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  // Up to 4 blocks per SM (4 x 512 threads fill one at hidden >= 4096; smaller rows take fewer
  // threads per block, and each block then walks more rows).
  const int64_t blocks = int64_t{4} * sms;
  return rows < blocks ? rows : blocks;
}

void rmsnorm_backward_cuda(const void* dy, const void* x, const void* weight, const float* rstd, void* dx,
                           float* dw_partial, int64_t rows, int64_t hidden, int64_t blocks, void* stream) {
  const Shape shape = shape_of(hidden);
  if (rows == 0 || blocks == 0) return;
  const auto s = static_cast<cudaStream_t>(stream);
  dispatch_per(shape.per, [&](auto per) {
    rmsnorm_backward_kernel<decltype(per)::value><<<static_cast<unsigned>(blocks), shape.threads, 0, s>>>(
        static_cast<const BfPack*>(dy), static_cast<const BfPack*>(x), static_cast<const BfPack*>(weight), rstd,
        static_cast<BfPack*>(dx), dw_partial, rows, hidden / kPack);
  });
  FT_CUDA_CHECK(cudaGetLastError());  // the launch
}

}  // namespace foldtron
