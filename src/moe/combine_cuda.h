// The combine of dropless routing on CUDA: each token's k expert outputs weighted by their routing
// weights and summed, in one pass each way. Torch's operations take three forward (the product
// with the weights, the gather of each token's rows, the sum) and four backward (the gather of the
// output gradient to the rows, its product with the weights, and the product and row sums for the
// weights' gradient), each a pass over all rows, and round the product to bf16 before the sum.
// Here fp32 arithmetic, one rounding to the rows' type. Compiled only with FOLDTRON_WITH_CUDA; no
// CUDA header here. `stream` is a cudaStream_t; launch errors throw std::runtime_error.
#pragma once

#include <cstdint>

namespace foldtron {

// out [tokens, hidden] = sum over j < copies of weights[r] * rows[r, :], r = rows_of_token[t, j];
// rows [R, hidden] and out in bf16 (`bf16`) or fp32, contiguous; weights [R] fp32;
// rows_of_token [tokens, copies] int64.
void weighted_sum_copies_cuda(const void* rows, bool bf16, const float* weights, const int64_t* rows_of_token,
                              void* out, int64_t tokens, int64_t copies, int64_t hidden, void* stream);

// Its gradients for row r of token t = token_index[r]: grad_rows[r, :] = weights[r] * grad_out[t, :]
// (the rows' type) and grad_weights[r] = <grad_out[t, :], rows[r, :]> (fp32).
void weighted_sum_copies_backward_cuda(const void* rows, bool bf16, const float* weights, const int64_t* token_index,
                                       const void* grad_out, void* grad_rows, float* grad_weights, int64_t num_rows,
                                       int64_t hidden, void* stream);

}  // namespace foldtron
