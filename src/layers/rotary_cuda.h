// Rotary position embedding on CUDA in one pass each way, for x [s, b, heads, d] (contiguous,
// bf16) with cos and sin tables [s, d] (bf16): forward y = x*cos + rotate_half(x)*sin, backward
// dx = dy*cos + rotate_half^T(dy*sin), fp32 arithmetic and one rounding. Torch's operations take
// a cat, two broadcast products and, in backward, two zero-filled slice gradients summed.
// Compiled only with FOLDTRON_WITH_CUDA; no CUDA header here. `stream` is a cudaStream_t;
// launch errors throw std::runtime_error.
#pragma once

#include <cstdint>

namespace foldtron {

// rows = b * heads per position; `backward` applies the transposed rotation (x is then dy).
void rotary_cuda(const void* x, const void* cos, const void* sin, void* y, int64_t seq, int64_t rows, int64_t dim,
                 bool backward, void* stream);

}  // namespace foldtron
