// The fused AdamW step on CUDA (see adamw_cuda.h).
//
// A persistent grid: each block takes a contiguous range of 1024-element tiles over the
// concatenation of all segments, finds the segment of its first tile by binary search on
// first_tile and walks forward. Each thread updates 4 consecutive elements per tile, with 16-byte
// (fp32) or 8-byte (16-bit) loads where the segment is aligned for them, element by element
// otherwise and in a segment's last partial group. Gradients and parameters may each be fp32 or
// bf16 per segment (a branch uniform over the segment); moments are one dtype for all.
#include "optim/adamw_cuda.h"

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "core/cuda_check.cuh"
#include "core/cuda_types.cuh"

namespace foldtron {
namespace {

constexpr int kThreads = 256;
constexpr int kVec = 4;
constexpr int64_t kTile = kThreads * kVec;

__host__ __device__ inline int64_t tiles_of(int64_t numel) { return (numel + kTile - 1) / kTile; }

// One element's update, in fp32; `m` and `v` come in as stored and leave unrounded. The order of
// operations is the reference's (AdamW::step_reference); contracted multiply-adds may still
// round differently in the last bit.
__device__ __forceinline__ float update(float p, float g, float& m, float& v, bool decay, const AdamWCudaStep& s) {
  g *= s.grad_scale;
  if (decay) p *= s.decay_factor;
  m = s.beta1 * m + s.one_minus_beta1 * g;
  v = s.beta2 * v + s.one_minus_beta2 * (g * g);
  const float denom = sqrtf(v) / s.bias2_sqrt + s.eps;
  return p - s.step_size * (m / denom);
}

// Four gradient elements as fp32.
__device__ __forceinline__ void load_grad(const void* grad, bool bf16, int64_t i, float (&g)[kVec]) {
  if (bf16) {
    const Pack<__nv_bfloat16, kVec> in = *reinterpret_cast<const Pack<__nv_bfloat16, kVec>*>(
        static_cast<const __nv_bfloat16*>(grad) + i);
#pragma unroll
    for (int k = 0; k < kVec; ++k) g[k] = to_float(in.v[k]);
  } else {
    const float4 in = *reinterpret_cast<const float4*>(static_cast<const float*>(grad) + i);
    g[0] = in.x, g[1] = in.y, g[2] = in.z, g[3] = in.w;
  }
}

__device__ __forceinline__ float grad_at(const void* grad, bool bf16, int64_t j) {
  return bf16 ? __bfloat162float(static_cast<const __nv_bfloat16*>(grad)[j]) : static_cast<const float*>(grad)[j];
}

// Stores four updated elements of the model's parameter in its dtype.
template <typename P>
__device__ __forceinline__ void store_param(void* param, int64_t i, const float (&p)[kVec]) {
  Pack<P, kVec> out;
#pragma unroll
  for (int k = 0; k < kVec; ++k) out.v[k] = from_float<P>(p[k]);
  *reinterpret_cast<Pack<P, kVec>*>(static_cast<P*>(param) + i) = out;
}

template <typename M>
__global__ void __launch_bounds__(kThreads)
    adamw_kernel(const AdamWCudaSegment* __restrict__ segments, int64_t count, int64_t total_tiles, AdamWCudaStep s) {
  const int64_t per_block = (total_tiles + gridDim.x - 1) / gridDim.x;
  int64_t tile = static_cast<int64_t>(blockIdx.x) * per_block;
  const int64_t end = min(total_tiles, tile + per_block);
  if (tile >= end) return;
  // The last segment starting at or before `tile` (empty segments are skipped below).
  int64_t lo = 0, hi = count - 1;
  while (lo < hi) {
    const int64_t mid = (lo + hi + 1) / 2;
    if (segments[mid].first_tile <= tile) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  int64_t index = lo;
  AdamWCudaSegment seg = segments[index];
  for (; tile < end; ++tile) {
    while (tile >= seg.first_tile + tiles_of(seg.numel)) seg = segments[++index];
    const int64_t i = (tile - seg.first_tile) * kTile + static_cast<int64_t>(threadIdx.x) * kVec;
    if (i >= seg.numel) continue;
    auto* exp_avg = static_cast<M*>(seg.exp_avg);
    auto* exp_avg_sq = static_cast<M*>(seg.exp_avg_sq);
    if (seg.vectorized && i + kVec <= seg.numel) {
      const float4 p4 = *reinterpret_cast<const float4*>(seg.main + i);
      float g[kVec];
      load_grad(seg.grad, seg.grad_bf16 != 0, i, g);
      Pack<M, kVec> m4 = *reinterpret_cast<const Pack<M, kVec>*>(exp_avg + i);
      Pack<M, kVec> v4 = *reinterpret_cast<const Pack<M, kVec>*>(exp_avg_sq + i);
      float p[kVec] = {p4.x, p4.y, p4.z, p4.w};
#pragma unroll
      for (int k = 0; k < kVec; ++k) {
        float m = to_float(m4.v[k]), v = to_float(v4.v[k]);
        p[k] = update(p[k], g[k], m, v, seg.decay, s);
        m4.v[k] = from_float<M>(m);
        v4.v[k] = from_float<M>(v);
      }
      *reinterpret_cast<float4*>(seg.main + i) = make_float4(p[0], p[1], p[2], p[3]);
      *reinterpret_cast<Pack<M, kVec>*>(exp_avg + i) = m4;
      *reinterpret_cast<Pack<M, kVec>*>(exp_avg_sq + i) = v4;
      if (seg.param_bf16) {
        store_param<__nv_bfloat16>(seg.param, i, p);
      } else {
        store_param<float>(seg.param, i, p);
      }
    } else {
      for (int64_t j = i; j < min(i + kVec, seg.numel); ++j) {
        float m = to_float(exp_avg[j]), v = to_float(exp_avg_sq[j]);
        const float p = update(seg.main[j], grad_at(seg.grad, seg.grad_bf16 != 0, j), m, v, seg.decay, s);
        seg.main[j] = p;
        exp_avg[j] = from_float<M>(m);
        exp_avg_sq[j] = from_float<M>(v);
        if (seg.param_bf16) {
          static_cast<__nv_bfloat16*>(seg.param)[j] = __float2bfloat16_rn(p);
        } else {
          static_cast<float*>(seg.param)[j] = p;
        }
      }
    }
  }
}


template <typename M>
void launch(const AdamWCudaSegment* segments, int64_t count, int64_t total_tiles, const AdamWCudaStep& step,
            cudaStream_t stream) {
  // Enough resident blocks to fill every multiprocessor, each with a contiguous run of tiles.
  static const int blocks = [] {
    int device = 0, sms = 0, per_sm = 0;
    FT_CUDA_CHECK(cudaGetDevice(&device));
    FT_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
    FT_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, adamw_kernel<M>, kThreads, 0));
    return sms * (per_sm > 0 ? per_sm : 1);
  }();
  const auto grid = static_cast<unsigned>(total_tiles < blocks ? total_tiles : blocks);
  adamw_kernel<M><<<grid, kThreads, 0, stream>>>(segments, count, total_tiles, step);
  FT_CUDA_CHECK(cudaGetLastError());  // the launch
}

}  // namespace

int64_t adamw_cuda_plan(AdamWCudaSegment* segments, int64_t count, CudaDtype moments) {
  const size_t moment_bytes = moments == CudaDtype::kFloat32 ? 4 : 2;
  int64_t tiles = 0;
  for (int64_t i = 0; i < count; ++i) {
    AdamWCudaSegment& seg = segments[i];
    seg.first_tile = tiles;
    seg.vectorized = aligned_to(seg.main, 16) && aligned_to(seg.grad, seg.grad_bf16 ? 8 : 16) &&
                     aligned_to(seg.exp_avg, kVec * moment_bytes) && aligned_to(seg.exp_avg_sq, kVec * moment_bytes) &&
                     aligned_to(seg.param, seg.param_bf16 ? 8 : 16);
    tiles += tiles_of(seg.numel);
  }
  return tiles;
}

void adamw_cuda_step(const AdamWCudaSegment* device_segments, int64_t count, int64_t total_tiles, CudaDtype moments,
                     const AdamWCudaStep& step, void* stream) {
  if (total_tiles == 0) return;
  const auto s = static_cast<cudaStream_t>(stream);
  if (moments == CudaDtype::kFloat32) {
    launch<float>(device_segments, count, total_tiles, step, s);
  } else {
    launch<__nv_bfloat16>(device_segments, count, total_tiles, step, s);
  }
}

}  // namespace foldtron
