// SwiGLU of a [rows, 2F] gate|up product on CUDA in one pass each way: forward reads the product
// once and writes silu(gate) * up; backward reads the product and the output gradient once and
// writes the gradient of both halves. bf16 in and out, fp32 arithmetic. Compiled only with
// FOLDTRON_WITH_CUDA; no CUDA header here. `stream` is a cudaStream_t; launch errors throw
// std::runtime_error.
#pragma once

#include <cstdint>

namespace foldtron {

// out[r, f] = silu(gate_up[r, f]) * gate_up[r, F + f]; both contiguous bf16.
void swiglu_forward_cuda(const void* gate_up, void* out, int64_t rows, int64_t ffn, void* stream);

// grad_gate_up[r, f] = grad_out[r, f] * up * silu'(gate), grad_gate_up[r, F + f] = grad_out[r, f] * silu(gate).
void swiglu_backward_cuda(const void* gate_up, const void* grad_out, void* grad_gate_up, int64_t rows, int64_t ffn,
                          void* stream);

}  // namespace foldtron
