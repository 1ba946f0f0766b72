// The grouped weight-gradient GEMM (grouped_wgrad_cuda.h) as CUTLASS types and their launch, for
// the .cu files of this kernel only: each tile shape is instantiated in a .cu of its own, so that
// they compile in parallel, and the dispatcher (grouped_wgrad_cuda.cu) reaches them through an
// Entry.
//
// Per expert g, CUTLASS's GEMM D = alpha * A B^T + beta * C with (M, N, K) = (m, n, rows_g):
//   A = dy_g^T  [m, rows_g]: M-major (column-major), the next row of dy m elements on;
//   B = x_g     [n, rows_g]: N-major (row-major K x N), the next row of x n elements on;
//   C = D = out[g] [m, n] fp32 row-major; alpha 1, beta 1 to accumulate (C read), 0 to write.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>

// CUTLASS's headers in the order its grouped-GEMM example includes them (they depend on it).
#include <cutlass/cutlass.h>
#include <cute/tensor.hpp>
#include <cutlass/gemm/dispatch_policy.hpp>
#include <cutlass/gemm/group_array_problem_shape.hpp>
#include <cutlass/gemm/collective/collective_builder.hpp>
#include <cutlass/epilogue/collective/collective_builder.hpp>
#include <cutlass/gemm/device/gemm_universal_adapter.h>
#include <cutlass/gemm/kernel/gemm_universal.hpp>

#include "core/cuda_check.cuh"
#include "moe/grouped_wgrad_cuda.h"

namespace foldtron::grouped_wgrad {

using Bf16 = cutlass::bfloat16_t;
using ProblemShape = cutlass::gemm::GroupProblemShape<cute::Shape<int, int, int>>;  // (M, N, K) per expert

// One call's operands (grouped_wgrad_cuda's arguments).
struct Call {
  const void* dy;
  const void* x;
  const int32_t* row_ends;
  float* out;
  int groups;
  int m, n;
  bool accumulate;
  bool along_n;
  int swizzle;
  void* buffer;
  cudaStream_t stream;
};

// What a tile shape's .cu gives the dispatcher.
struct Entry {
  size_t (*buffer_bytes)(int groups);
  void (*run)(const Call& call);
};
Entry cooperative_128x256();
Entry cooperative_256x128();
Entry pingpong_128x128();

int sm_count();  // of the current device (grouped_wgrad_cuda.cu)

inline void cutlass_check(cutlass::Status status, const char* what) {
  if (status != cutlass::Status::kSuccess) {
    throw std::runtime_error(std::string("the grouped weight-gradient GEMM's ") + what +
                             " failed: " + cutlass::cutlassGetStatusString(status));
  }
}

// Clusters of two thread blocks along M (each tile of B is loaded once for the pair), K tiles of 64.
template <bool kPingpong, int kTileM, int kTileN>
struct Kernel {
  using Tile = cute::Shape<cute::Int<kTileM>, cute::Int<kTileN>, cute::_64>;
  using Cluster = cute::Shape<cute::_2, cute::_1, cute::_1>;
  using MainloopSchedule = std::conditional_t<kPingpong, cutlass::gemm::KernelPtrArrayTmaWarpSpecializedPingpong,
                                              cutlass::gemm::KernelPtrArrayTmaWarpSpecializedCooperative>;
  using EpilogueSchedule = std::conditional_t<kPingpong, cutlass::epilogue::PtrArrayTmaWarpSpecializedPingpong,
                                              cutlass::epilogue::PtrArrayTmaWarpSpecializedCooperative>;
  using Epilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, Tile, Cluster,
      cutlass::epilogue::collective::EpilogueTileAuto, float, float,  // accumulator, compute
      float, cutlass::layout::RowMajor*, 4,                           // C: 4 floats per 16 bytes
      float, cutlass::layout::RowMajor*, 4,                           // D
      EpilogueSchedule, cutlass::epilogue::fusion::LinearCombination<float, float>>::CollectiveOp;
  using Mainloop = typename cutlass::gemm::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp,
      Bf16, cutlass::layout::ColumnMajor*, 8,  // A: 8 bf16 per 16 bytes
      Bf16, cutlass::layout::RowMajor*, 8,     // B
      float, Tile, Cluster,
      cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(sizeof(typename Epilogue::SharedStorage))>,
      MainloopSchedule>::CollectiveOp;
  using Gemm = cutlass::gemm::device::GemmUniversalAdapter<
      cutlass::gemm::kernel::GemmUniversal<ProblemShape, Mainloop, Epilogue>>;
};

// The per-expert argument arrays at the front of the caller's buffer (each 16-byte aligned: on
// the host CUTLASS makes placeholder TMA descriptors from the pointer arrays' own addresses), then
// CUTLASS's workspace 128-byte aligned (it holds the TMA descriptors the kernel updates per
// expert, which must be). The buffer itself comes from torch's allocator, 512-byte aligned.
template <class Gemm>
struct Arrays {
  using StrideA = typename Gemm::GemmKernel::InternalStrideA;
  using StrideB = typename Gemm::GemmKernel::InternalStrideB;
  using StrideC = typename Gemm::GemmKernel::InternalStrideC;
  using StrideD = typename Gemm::GemmKernel::InternalStrideD;
  // The one dynamic stride of each: A's and B's along K (a row of dy or x), C's and D's along M.
  static_assert(std::is_same_v<StrideA, cute::Stride<cute::_1, int64_t, cute::_0>>);
  static_assert(std::is_same_v<StrideB, cute::Stride<cute::_1, int64_t, cute::_0>>);
  static_assert(std::is_same_v<StrideC, cute::Stride<int64_t, cute::_1, cute::_0>>);
  static_assert(std::is_same_v<StrideD, StrideC>);

  ProblemShape::UnderlyingProblemShape* shapes;
  const Bf16** a;
  const Bf16** b;
  const float** c;
  float** d;
  StrideA* stride_a;
  StrideB* stride_b;
  StrideC* stride_c;
  StrideD* stride_d;
  void* workspace;
  size_t bytes;  // of the arrays, before the workspace

  // Laid out over `buffer` (null: only `bytes` is of use).
  Arrays(void* buffer, int groups) {
    const auto base = reinterpret_cast<uintptr_t>(buffer);
    size_t offset = 0;
    const auto place = [&](auto*& array) {
      array = reinterpret_cast<std::remove_reference_t<decltype(array)>>(base + offset);
      offset += (sizeof(*array) * static_cast<size_t>(groups) + 15) / 16 * 16;
    };
    place(shapes), place(a), place(b), place(c), place(d);
    place(stride_a), place(stride_b), place(stride_c), place(stride_d);
    offset = (offset + 127) / 128 * 128;
    workspace = reinterpret_cast<void*>(base + offset);
    bytes = offset;
  }
};

// One thread per expert: its problem shape, operand pointers and strides. An expert without rows
// gets M = 0, hence no tiles: CUTLASS's main loop leaves the accumulators unset for K = 0.
template <class Gemm>
__global__ void fill_arrays(Arrays<Gemm> arrays, const Bf16* dy, const Bf16* x, const int32_t* row_ends,
                            float* out, int groups, int m, int n) {
  const int g = blockIdx.x * blockDim.x + threadIdx.x;
  if (g >= groups) return;
  const int64_t start = g == 0 ? 0 : row_ends[g - 1];
  const int rows = static_cast<int>(row_ends[g] - start);
  arrays.shapes[g] = cute::make_shape(rows > 0 ? m : 0, n, rows);
  arrays.a[g] = dy + start * m;
  arrays.b[g] = x + start * n;
  float* target = out + static_cast<int64_t>(g) * m * n;
  arrays.c[g] = target;
  arrays.d[g] = target;
  typename Arrays<Gemm>::StrideA stride_a{};
  cute::get<1>(stride_a) = m;
  typename Arrays<Gemm>::StrideB stride_b{};
  cute::get<1>(stride_b) = n;
  typename Arrays<Gemm>::StrideC stride_c{};
  cute::get<0>(stride_c) = n;
  arrays.stride_a[g] = stride_a;
  arrays.stride_b[g] = stride_b;
  arrays.stride_c[g] = stride_c;
  arrays.stride_d[g] = stride_c;
}

// The problem shapes stay on the device (the host has no counts to give); CUTLASS then launches
// one persistent thread block per SM and walks the experts' tiles on the device.
template <class Gemm>
typename Gemm::Arguments arguments(const Arrays<Gemm>& arrays, int groups, bool accumulate, bool along_n,
                                   int swizzle) {
  using Raster = cutlass::gemm::kernel::detail::RasterOrderOptions;
  typename Gemm::Arguments args{cutlass::gemm::GemmUniversalMode::kGrouped,
                                {groups, arrays.shapes, nullptr},
                                {arrays.a, arrays.stride_a, arrays.b, arrays.stride_b},
                                {{}, arrays.c, arrays.stride_c, arrays.d, arrays.stride_d}};
  args.epilogue.thread.alpha = 1.0f;
  args.epilogue.thread.beta = accumulate ? 1.0f : 0.0f;  // 0: C is not read
  args.hw_info.sm_count = sm_count();
  args.scheduler.raster_order = along_n ? Raster::AlongN : Raster::AlongM;
  args.scheduler.max_swizzle_size = swizzle;
  return args;
}

template <class Gemm>
size_t buffer_bytes(int groups) {
  const Arrays<Gemm> arrays(nullptr, groups);
  return arrays.bytes + Gemm::get_workspace_size(arguments(arrays, groups, true, false, 1));
}

template <class Gemm>
void run(const Call& call) {
  const Arrays<Gemm> arrays(call.buffer, call.groups);
  constexpr int kThreads = 128;
  fill_arrays<Gemm><<<(call.groups + kThreads - 1) / kThreads, kThreads, 0, call.stream>>>(
      arrays, static_cast<const Bf16*>(call.dy), static_cast<const Bf16*>(call.x), call.row_ends, call.out,
      call.groups, call.m, call.n);
  FT_CUDA_CHECK(cudaGetLastError());
  const typename Gemm::Arguments args = arguments(arrays, call.groups, call.accumulate, call.along_n, call.swizzle);
  Gemm gemm;
  cutlass_check(gemm.can_implement(args), "can_implement");
  cutlass_check(gemm.initialize(args, arrays.workspace, call.stream), "initialize");
  cutlass_check(gemm.run(call.stream), "launch");
  FT_CUDA_CHECK(cudaGetLastError());
}

template <class Gemm>
Entry entry() {
  return {&buffer_bytes<Gemm>, &run<Gemm>};
}

}  // namespace foldtron::grouped_wgrad
