// Rotary embedding forward and backward on CUDA (see rotary_cuda.h).
//
// With h = d/2, position p and c = cos[p], s = sin[p]:
//   forward:  y[i] = x[i] c[i] - x[i+h] s[i],      y[i+h] = x[i+h] c[i+h] + x[i] s[i+h]
//   backward: dx[i] = dy[i] c[i] + dy[i+h] s[i+h],  dx[i+h] = dy[i+h] c[i+h] - dy[i] s[i]
// Each thread takes 4 consecutive i of one row (8-byte loads of each half) when h is a multiple of 4,
// else one i; a grid-stride loop covers every (position, row, i).
#include "layers/rotary_cuda.h"

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "core/cuda_check.cuh"
#include "core/cuda_types.cuh"

namespace foldtron {
namespace {

template <int kVec>
using BfPack = Pack<__nv_bfloat16, kVec>;

constexpr int kThreads = 256;

template <int kVec>
__global__ void __launch_bounds__(kThreads)
    rotary_kernel(const __nv_bfloat16* __restrict__ x, const __nv_bfloat16* __restrict__ cos,
                  const __nv_bfloat16* __restrict__ sin, __nv_bfloat16* __restrict__ y, int64_t seq, int64_t rows,
                  int64_t half, bool backward) {
  const int64_t groups = half / kVec;  // per row
  const int64_t total = seq * rows * groups;
  // Backward is the transposed rotation: the sine term changes sign.
  const float sign = backward ? -1.0f : 1.0f;
  for (int64_t unit = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; unit < total;
       unit += static_cast<int64_t>(gridDim.x) * kThreads) {
    const int64_t i = (unit % groups) * kVec;
    const int64_t row = unit / groups;  // over seq * rows
    const int64_t position = row / rows;
    const int64_t base = row * 2 * half, table = position * 2 * half;
    const BfPack<kVec> lo = *reinterpret_cast<const BfPack<kVec>*>(x + base + i);
    const BfPack<kVec> hi = *reinterpret_cast<const BfPack<kVec>*>(x + base + half + i);
    const BfPack<kVec> c_lo = *reinterpret_cast<const BfPack<kVec>*>(cos + table + i);
    const BfPack<kVec> c_hi = *reinterpret_cast<const BfPack<kVec>*>(cos + table + half + i);
    const BfPack<kVec> s_lo = *reinterpret_cast<const BfPack<kVec>*>(sin + table + i);
    const BfPack<kVec> s_hi = *reinterpret_cast<const BfPack<kVec>*>(sin + table + half + i);
    BfPack<kVec> out_lo, out_hi;
#pragma unroll
    for (int k = 0; k < kVec; ++k) {
      const float a = __bfloat162float(lo.v[k]), b = __bfloat162float(hi.v[k]);
      // forward: s_lo multiplies b in the low half, s_hi multiplies a in the high half;
      // backward: s_hi multiplies b, s_lo multiplies a.
      const float s_for_b = __bfloat162float(backward ? s_hi.v[k] : s_lo.v[k]);
      const float s_for_a = __bfloat162float(backward ? s_lo.v[k] : s_hi.v[k]);
      out_lo.v[k] = __float2bfloat16_rn(a * __bfloat162float(c_lo.v[k]) - sign * b * s_for_b);
      out_hi.v[k] = __float2bfloat16_rn(b * __bfloat162float(c_hi.v[k]) + sign * a * s_for_a);
    }
    *reinterpret_cast<BfPack<kVec>*>(y + base + i) = out_lo;
    *reinterpret_cast<BfPack<kVec>*>(y + base + half + i) = out_hi;
  }
}

}  // namespace

void rotary_cuda(const void* x, const void* cos, const void* sin, void* y, int64_t seq, int64_t rows, int64_t dim,
                 bool backward, void* stream) {
  const int64_t half = dim / 2;
  if (seq == 0 || rows == 0 || half == 0) return;
  const auto* xs = static_cast<const __nv_bfloat16*>(x);
  const auto* cs = static_cast<const __nv_bfloat16*>(cos);
  const auto* ss = static_cast<const __nv_bfloat16*>(sin);
  auto* ys = static_cast<__nv_bfloat16*>(y);
  const bool vectorized =
      half % 4 == 0 && aligned_to(x, 8) && aligned_to(cos, 8) && aligned_to(sin, 8) && aligned_to(y, 8);
  const int64_t units = seq * rows * (vectorized ? half / 4 : half);
  const int64_t blocks = (units + kThreads - 1) / kThreads;
  const unsigned grid = grid_of(blocks);
  const auto s = static_cast<cudaStream_t>(stream);
  if (vectorized) {
    rotary_kernel<4><<<grid, kThreads, 0, s>>>(xs, cs, ss, ys, seq, rows, half, backward);
  } else {
    rotary_kernel<1><<<grid, kThreads, 0, s>>>(xs, cs, ss, ys, seq, rows, half, backward);
  }
  FT_CUDA_CHECK(cudaGetLastError());  // the launch
}

}  // namespace foldtron
