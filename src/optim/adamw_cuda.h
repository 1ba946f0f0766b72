// The fused AdamW step on CUDA, written for fp32 main weights (Megatron-style mixed precision):
// one pass over every element reads the main weight, the main gradient (fp32 or bf16) and both moments,
// and writes the main weight, both moments and the model's bf16 (or fp32) parameter. Torch's
// fused kernel does the first part; refreshing the parameters from the main copy then costs a
// second pass over the fp32 weights, which this kernel saves. Moments may be kept in bf16
// (arithmetic stays fp32). Compiled only with FOLDTRON_WITH_CUDA; no CUDA header here.
#pragma once

#include <cstdint>

namespace foldtron {

enum class CudaDtype : int32_t { kFloat32, kBFloat16 };

// One contiguous run of elements: a parameter's part of this rank's shard.
struct AdamWCudaSegment {
  float* main = nullptr;            // fp32 main weights
  const void* grad = nullptr;       // main gradients, fp32 or bf16 (read only; clipping scales on the fly)
  void* exp_avg = nullptr;          // moments, fp32 or bf16
  void* exp_avg_sq = nullptr;
  void* param = nullptr;            // the model's parameter elements, refreshed from `main`
  int32_t param_bf16 = 0;           // `param` is bf16 (else fp32)
  int32_t grad_bf16 = 0;            // `grad` is bf16 (else fp32)
  int64_t numel = 0;
  int64_t first_tile = 0;           // tiles of all earlier segments (filled by adamw_cuda_plan)
  int32_t decay = 0;                // decoupled weight decay applies
  int32_t vectorized = 0;           // every pointer aligned for 4-element loads
};

// Per-step scalars, computed on the host in double and passed by value (the torch-op reference
// update in AdamW uses the same values).
struct AdamWCudaStep {
  float step_size = 0;     // lr / (1 - beta1^t)
  float bias2_sqrt = 1;    // sqrt(1 - beta2^t)
  float beta1 = 0, beta2 = 0, eps = 0;
  float one_minus_beta1 = 1, one_minus_beta2 = 1;  // rounded from double, as torch rounds its alphas
  float decay_factor = 1;  // 1 - lr * weight_decay (for segments with `decay`)
  float grad_scale = 1;    // clipping factor
};

// Fills each segment's first_tile (in the kernel's tiles of 1024 elements), marks it vectorized
// where its pointers allow, and returns the total number of tiles.
int64_t adamw_cuda_plan(AdamWCudaSegment* segments, int64_t count, CudaDtype moments);

// One launch over `count` segments whose table (planned, then copied to the device) starts at
// `device_segments`, on `stream` (a cudaStream_t). Throws std::runtime_error on a launch error.
void adamw_cuda_step(const AdamWCudaSegment* device_segments, int64_t count, int64_t total_tiles, CudaDtype moments,
                     const AdamWCudaStep& step, void* stream);

}  // namespace foldtron
