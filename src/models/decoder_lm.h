// Decoder-only language model (Llama-style dense; the MoE issue adds MoE layers), assembled from
// the tensor-parallel layers:
//   ids [s, b] -> embedding -> L x (x + attn(norm(x)); x + mlp(norm(x))) -> norm -> output layer
//   -> vocab-parallel logits [s, b, V/tp] -> per-token cross-entropy [s, b]
// The residual stream is [s, b, h], or [s/tp, b, h] with sequence parallelism. Parameter names
// (named_parameters()) follow Hugging Face's Llama names where they exist.
#pragma once

#include <memory>
#include <vector>

#include <torch/nn/module.h>

#include "config/config.h"
#include "layers/attention.h"
#include "layers/embedding.h"
#include "layers/mlp.h"
#include "layers/norm.h"

namespace foldtron {

class DecoderLayer : public torch::nn::Module {
 public:
  DecoderLayer(const LayerContext& ctx, int64_t index, const ModelConfig& model);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& positions);

  std::shared_ptr<Norm> input_layernorm, post_attention_layernorm;
  std::shared_ptr<Attention> self_attn;
  std::shared_ptr<Mlp> mlp;

 private:
  LayerContext ctx_;
  double dropout_;
};

class DecoderLM : public torch::nn::Module {
 public:
  DecoderLM(const LayerContext& ctx, const ModelConfig& model);

  // ids [s, b] int64 -> vocab-parallel logits [s, b, V/tp].
  torch::Tensor logits(const torch::Tensor& ids);
  // Per-token next-token losses [s, b] for ids [s, b] and targets [s, b] (kIgnoreIndex masks).
  torch::Tensor token_losses(const torch::Tensor& ids, const torch::Tensor& targets);

  std::shared_ptr<VocabParallelEmbedding> embed_tokens;
  std::vector<std::shared_ptr<DecoderLayer>> layers;
  std::shared_ptr<Norm> norm;
  std::shared_ptr<ColumnParallelLinear> lm_head;  // null with tied embeddings

 private:
  LayerContext ctx_;
};

}  // namespace foldtron
