// Context parallelism: each sequence is cut into 2*cp chunks and rank r of the cp group holds
// chunks r and 2*cp-1-r (so every rank gets the same share of causal-attention work). Everything
// outside core attention is per token and needs nothing; core attention needs keys and values
// of the whole sequence:
//   allgather: gather K and V over cp (backward: reduce-scatter their gradients), mask by the real
//              token positions;
//   a2a:       Ulysses: all-to-all from sequence-split to head-split (every rank gets the whole
//              sequence of heads/cp heads), plain causal attention, all-to-all back. Needs the
//              query and key/value heads of a tp rank divisible by cp.
//   p2p:       ring attention: key/value blocks travel around the cp ring (the next block's
//              exchange is posted before the current block is computed); each block's partial
//              result is merged by its log-sum-exp. Backward recomputes each block's
//              probabilities from the saved log-sum-exp and sends the key/value gradients around
//              the ring with their block, one extra hop bringing them home. Explicit fp32 math,
//              no attention dropout.
#pragma once

#include <cstdint>
#include <functional>

#include <torch/types.h>

#include "config/config.h"

namespace foldtron {

class Communicator;

// The positions [s/cp] (int64) that cp rank `rank` holds of a sequence of `seq` tokens, in the
// order it holds them: chunk rank, then chunk 2*cp-1-rank (with cp 1: 0..seq-1).
torch::Tensor cp_positions(int64_t seq, int64_t cp, int64_t rank, torch::Device device = torch::kCPU);
// Every cp rank's positions concatenated in rank order [seq]: the order of a sequence gathered
// over cp (its argsort puts gathered rows back in position order).
torch::Tensor cp_gathered_positions(int64_t seq, int64_t cp, torch::Device device = torch::kCPU);

// Causal attention of this rank's queries over the whole sequence. q [b, hq, s/cp, d], k and v
// [b, hkv, s/cp, d] (this rank's tokens, at cp_positions order); returns [b, hq, s/cp, d].
// `core(q, k, v, mask)` computes attention on local tensors: mask undefined means causal over
// the given order, else a bool [sq, sk] (true: attend).
using CoreAttentionFn = std::function<torch::Tensor(const torch::Tensor&, const torch::Tensor&, const torch::Tensor&,
                                                    const torch::Tensor&)>;
// `scale` is the softmax scale (the ring computes attention itself).
torch::Tensor context_parallel_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                         Communicator& cp, CpCommType type, double scale, const CoreAttentionFn& core);

}  // namespace foldtron
