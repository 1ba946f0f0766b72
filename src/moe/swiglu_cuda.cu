// SwiGLU forward and backward on CUDA (see swiglu_cuda.h).
//
// One block per row (grid-stride over rows); its threads walk the row's F columns 8 at a time with
// 16-byte loads of both halves when F and the pointers allow, one at a time otherwise.
#include "moe/swiglu_cuda.h"

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "core/cuda_check.cuh"
#include "core/cuda_types.cuh"

namespace foldtron {
namespace {

constexpr int kThreads = 256;
constexpr int kVec = 8;

using BfPack = Pack<__nv_bfloat16>;
static_assert(BfPack::kSize == kVec);

__device__ __forceinline__ float sigmoid(float x) { return 1.0f / (1.0f + __expf(-x)); }

struct Forward {
  const __nv_bfloat16* gate_up;
  __nv_bfloat16* out;
  __device__ __forceinline__ void pack(int64_t row, int64_t ffn, int64_t f) const {
    const BfPack gate = *reinterpret_cast<const BfPack*>(gate_up + row * 2 * ffn + f);
    const BfPack up = *reinterpret_cast<const BfPack*>(gate_up + row * 2 * ffn + ffn + f);
    BfPack y;
#pragma unroll
    for (int k = 0; k < kVec; ++k) y.v[k] = __float2bfloat16_rn(value(gate.v[k], up.v[k]));
    *reinterpret_cast<BfPack*>(out + row * ffn + f) = y;
  }
  __device__ __forceinline__ void one(int64_t row, int64_t ffn, int64_t f) const {
    out[row * ffn + f] = __float2bfloat16_rn(value(gate_up[row * 2 * ffn + f], gate_up[row * 2 * ffn + ffn + f]));
  }
  static __device__ __forceinline__ float value(__nv_bfloat16 gate, __nv_bfloat16 up) {
    const float g = __bfloat162float(gate);
    return g * sigmoid(g) * __bfloat162float(up);
  }
};

struct Backward {
  const __nv_bfloat16* gate_up;
  const __nv_bfloat16* grad_out;
  __nv_bfloat16* grad_gate_up;
  __device__ __forceinline__ void pack(int64_t row, int64_t ffn, int64_t f) const {
    const BfPack gate = *reinterpret_cast<const BfPack*>(gate_up + row * 2 * ffn + f);
    const BfPack up = *reinterpret_cast<const BfPack*>(gate_up + row * 2 * ffn + ffn + f);
    const BfPack dy = *reinterpret_cast<const BfPack*>(grad_out + row * ffn + f);
    BfPack d_gate, d_up;
#pragma unroll
    for (int k = 0; k < kVec; ++k) grads(gate.v[k], up.v[k], dy.v[k], d_gate.v[k], d_up.v[k]);
    *reinterpret_cast<BfPack*>(grad_gate_up + row * 2 * ffn + f) = d_gate;
    *reinterpret_cast<BfPack*>(grad_gate_up + row * 2 * ffn + ffn + f) = d_up;
  }
  __device__ __forceinline__ void one(int64_t row, int64_t ffn, int64_t f) const {
    grads(gate_up[row * 2 * ffn + f], gate_up[row * 2 * ffn + ffn + f], grad_out[row * ffn + f],
          grad_gate_up[row * 2 * ffn + f], grad_gate_up[row * 2 * ffn + ffn + f]);
  }
  static __device__ __forceinline__ void grads(__nv_bfloat16 gate, __nv_bfloat16 up, __nv_bfloat16 dy,
                                               __nv_bfloat16& d_gate, __nv_bfloat16& d_up) {
    const float g = __bfloat162float(gate), u = __bfloat162float(up), d = __bfloat162float(dy);
    const float s = sigmoid(g);
    d_gate = __float2bfloat16_rn(d * u * s * (1.0f + g * (1.0f - s)));
    d_up = __float2bfloat16_rn(d * g * s);
  }
};

template <typename Op>
__global__ void __launch_bounds__(kThreads) swiglu_kernel(Op op, int64_t rows, int64_t ffn, bool vectorized) {
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    if (vectorized) {
      for (int64_t f = static_cast<int64_t>(threadIdx.x) * kVec; f < ffn; f += kThreads * kVec) op.pack(row, ffn, f);
    } else {
      for (int64_t f = threadIdx.x; f < ffn; f += kThreads) op.one(row, ffn, f);
    }
  }
}

template <typename Op>
void launch(const Op& op, int64_t rows, int64_t ffn, bool vectorized, void* stream) {
  if (rows == 0 || ffn == 0) return;
  const auto grid = static_cast<unsigned>(rows < (int64_t{1} << 30) ? rows : (int64_t{1} << 30));
  swiglu_kernel<<<grid, kThreads, 0, static_cast<cudaStream_t>(stream)>>>(op, rows, ffn, vectorized);
  FT_CUDA_CHECK(cudaGetLastError());  // the launch
}

}  // namespace

void swiglu_forward_cuda(const void* gate_up, void* out, int64_t rows, int64_t ffn, void* stream) {
  const Forward op{static_cast<const __nv_bfloat16*>(gate_up), static_cast<__nv_bfloat16*>(out)};
  launch(op, rows, ffn, ffn % kVec == 0 && aligned_to(gate_up, 16) && aligned_to(out, 16), stream);
}

void swiglu_backward_cuda(const void* gate_up, const void* grad_out, void* grad_gate_up, int64_t rows, int64_t ffn,
                          void* stream) {
  const Backward op{static_cast<const __nv_bfloat16*>(gate_up), static_cast<const __nv_bfloat16*>(grad_out),
                    static_cast<__nv_bfloat16*>(grad_gate_up)};
  const bool vectorized =
      ffn % kVec == 0 && aligned_to(gate_up, 16) && aligned_to(grad_out, 16) && aligned_to(grad_gate_up, 16);
  launch(op, rows, ffn, vectorized, stream);
}

}  // namespace foldtron
