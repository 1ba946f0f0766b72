// RMSNorm on CUDA in one pass each way, for bf16 rows x [rows, hidden] and a bf16 weight [hidden]:
// forward y = bf16(w * bf16(x * rstd)) with rstd = rsqrt(mean(x^2) + eps) in fp32 (saved for
// backward), the roundings of the torch-op path (Hugging Face's order); backward, with
// xhat = x * rstd and g = dy * w in fp32, dx = rstd * (g - xhat * mean(g * xhat)) and
// dw = sum over rows of dy * bf16(xhat), one rounding each. Torch's operations take about ten
// passes (casts, pow, mean, products and their gradients). Compiled only with
// FOLDTRON_WITH_CUDA; no CUDA header here. `stream` is a cudaStream_t; launch errors throw
// std::runtime_error.
#pragma once

#include <cstdint>

namespace foldtron {

// The fused kernels take hidden % 8 == 0 (16-byte loads) up to this size, with x, dy, y, dx and
// the weight 16-byte aligned.
constexpr int64_t kRmsNormCudaMaxHidden = 16384;

void rmsnorm_forward_cuda(const void* x, const void* weight, void* y, float* rstd, int64_t rows, int64_t hidden,
                          double eps, void* stream);

// Blocks of the backward kernel for `rows` rows on the current device: the rows of
// `dw_partial` [blocks, hidden] (fp32) that rmsnorm_backward_cuda writes and the caller sums.
int64_t rmsnorm_backward_blocks(int64_t rows);

void rmsnorm_backward_cuda(const void* dy, const void* x, const void* weight, const float* rstd, void* dx,
                           float* dw_partial, int64_t rows, int64_t hidden, int64_t blocks, void* stream);

}  // namespace foldtron
