// Vocabulary-parallel embedding and cross-entropy (Megatron-Core's VocabParallelEmbedding and
// vocab_parallel_cross_entropy). The vocabulary V is padded with zero rows to Vp, a multiple of tp
// (as Megatron pads), and split over tp: rank r holds rows [r*Vp/tp, (r+1)*Vp/tp) of the
// embedding table, which is also the output layer's weight when embeddings are tied. The padded
// rows are never looked up; their logits are masked out of the loss (and generation drops them).
// Full-vocabulary logits never exist on one rank.
#pragma once

#include <string>

#include <torch/nn/module.h>

#include "layers/context.h"

namespace foldtron {

// V rounded up to a multiple of tp.
int64_t padded_vocab(int64_t vocab, int64_t tp);

class VocabParallelEmbedding : public torch::nn::Module {
 public:
  // `padding_idx` (-1: none): the padding token, whose row gets no gradient from lookups (as with
  // torch's nn.Embedding(padding_idx); a tied output layer still trains it).
  VocabParallelEmbedding(const LayerContext& ctx, const std::string& name, int64_t vocab, int64_t hidden,
                         double init_std, int64_t padding_idx = -1);
  // ids [s, b] -> [s, b, h], or [s/tp, b, h] with sequence parallelism.
  torch::Tensor forward(const torch::Tensor& ids);

  torch::Tensor weight;  // [Vp/tp, h]
  int64_t vocab() const { return vocab_; }

 private:
  LayerContext ctx_;
  int64_t vocab_ = 0;
  int64_t padding_idx_ = -1;
  int64_t vocab_start_ = 0;
  int64_t vocab_end_ = 0;
};

constexpr int64_t kIgnoreIndex = -100;

// Per-token cross-entropy from vocab-parallel logits [s, b, Vp/tp] and targets [s, b]; targets
// equal to kIgnoreIndex give loss 0 and no gradient; columns at or past `vocab` (padding; -1:
// none) take no part. Returns [s, b] fp32 losses, the same on every tp rank. Uses three
// all-reduces over `tp` (max, sum of exponentials, target logit). On CUDA (bf16 or fp32 logits
// whose rows are whole 16-byte packs) two kernels of layers/cross_entropy_cuda.h do the passes.
torch::Tensor vocab_parallel_cross_entropy(const torch::Tensor& logits, const torch::Tensor& targets,
                                           Communicator& tp, int64_t vocab = -1);

}  // namespace foldtron
