// The vocabulary cross-entropy on CUDA in one pass over the logits each way, for rows of a logits
// shard z [rows, vocab] in bf16 or fp32. Forward: each row's max m, sum of exp(z - m) over the
// first `valid` columns (the rest pad the vocabulary) and the target's logit, in fp32, read in
// one pass (online softmax); the caller combines them over tensor-parallel ranks. Backward: the
// gradient (exp(z - M) / S - onehot(target)) * scale in the logits' type, written in one pass from
// the logits and the row's combined max M and sum S. Torch's operations take about ten passes
// over fp32 copies of the logits (the cast, max, subtraction, exp, sum, division, and in backward
// the clone, scatter, product and cast back) and keep the fp32 softmax for backward. Compiled
// only with FOLDTRON_WITH_CUDA; no CUDA header here. `stream` is a cudaStream_t; launch errors
// throw std::runtime_error.
#pragma once

#include <cstdint>

namespace foldtron {

// The kernels read 16 bytes at a time: the caller passes 16-byte aligned logits and gradient
// whose rows are a multiple of 16 bytes (vocab % 8 == 0 in bf16, % 4 in fp32).
// `target` [rows]: the target's column in this shard, or -1 (elsewhere, or ignored).

// max, sum_exp, target_logit [rows] fp32; target_logit is 0 where target is -1.
void cross_entropy_stats_cuda(const void* logits, bool bf16, const int64_t* target, float* max, float* sum_exp,
                              float* target_logit, int64_t rows, int64_t vocab, int64_t valid, void* stream);

// grad [rows, vocab] in the logits' type; max, sum, scale [rows] fp32 (columns at or past `valid`
// get 0).
void cross_entropy_grad_cuda(const void* logits, bool bf16, const int64_t* target, const float* max,
                             const float* sum, const float* scale, void* grad, int64_t rows, int64_t vocab,
                             int64_t valid, void* stream);

}  // namespace foldtron
