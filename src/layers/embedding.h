// Vocabulary-parallel embedding and cross-entropy (Megatron-Core's VocabParallelEmbedding and
// vocab_parallel_cross_entropy). The vocabulary V is split over tp: rank r holds rows
// [r*V/tp, (r+1)*V/tp) of the embedding table, which is also the output layer's weight when
// embeddings are tied. Full-vocabulary logits never exist on one rank.
#pragma once

#include <string>

#include <torch/nn/module.h>

#include "layers/context.h"

namespace foldtron {

class VocabParallelEmbedding : public torch::nn::Module {
 public:
  VocabParallelEmbedding(const LayerContext& ctx, const std::string& name, int64_t vocab, int64_t hidden,
                         double init_std);
  // ids [s, b] -> [s, b, h], or [s/tp, b, h] with sequence parallelism.
  torch::Tensor forward(const torch::Tensor& ids);

  torch::Tensor weight;  // [V/tp, h]

 private:
  LayerContext ctx_;
  int64_t vocab_start_ = 0;
  int64_t vocab_end_ = 0;
};

constexpr int64_t kIgnoreIndex = -100;

// Per-token cross-entropy from vocab-parallel logits [s, b, V/tp] and targets [s, b]; targets
// equal to kIgnoreIndex give loss 0 and no gradient. Returns [s, b] fp32 losses, the same on
// every tp rank. Uses three all-reduces over `tp` (max, target logit, sum of exponentials).
torch::Tensor vocab_parallel_cross_entropy(const torch::Tensor& logits, const torch::Tensor& targets,
                                           Communicator& tp);

}  // namespace foldtron
