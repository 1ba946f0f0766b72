// Decoder-only language model (Llama, Mixtral and Qwen2-MoE shapes), assembled from the
// tensor-parallel layers and the MoE layer:
//   ids [s, b] -> embedding -> L x (x + attn(norm(x)); x + mlp(norm(x))) -> norm -> output layer
//   -> vocab-parallel logits [s, b, V/tp] -> per-token cross-entropy [s, b]
// where `mlp` is a dense MLP or, on the layers moe.is_moe_layer() names, an MoE layer.
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
#include "moe/moe_layer.h"

namespace foldtron {

class DecoderLayer : public torch::nn::Module {
 public:
  DecoderLayer(const LayerContext& ctx, int64_t index, const ModelConfig& model, const MoEConfig& moe);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& positions);

  std::shared_ptr<Norm> input_layernorm, post_attention_layernorm;
  std::shared_ptr<Attention> self_attn;
  std::shared_ptr<Mlp> mlp;       // dense layers
  std::shared_ptr<MoELayer> moe;  // MoE layers (registered as "mlp" too)

 private:
  LayerContext ctx_;
  double dropout_;
};

class DecoderLM : public torch::nn::Module {
 public:
  DecoderLM(const LayerContext& ctx, const ModelConfig& model, const MoEConfig& moe = MoEConfig{});

  // ids [s, b] int64 -> vocab-parallel logits [s, b, V/tp]. With `hidden_states`, also the
  // residual stream as Hugging Face lists it: the embedding output, the stream after each layer
  // but the last, and the final norm's output (L + 1 tensors of [s(/tp), b, h]).
  // `positions` [s]: the tokens' positions in their sequences (context parallelism gives each
  // rank its chunks, cp_positions); undefined means 0..s-1.
  torch::Tensor logits(const torch::Tensor& ids, std::vector<torch::Tensor>* hidden_states = nullptr,
                       const torch::Tensor& positions = {});
  // Per-token next-token losses [s, b] for ids [s, b] and targets [s, b] (kIgnoreIndex masks).
  torch::Tensor token_losses(const torch::Tensor& ids, const torch::Tensor& targets, const torch::Tensor& positions = {});

  // The MoE layers, and the sum of their router losses from the last forward (this rank's
  // shares; undefined when none apply).
  std::vector<std::shared_ptr<MoELayer>> moe_layers() const;
  RouterLosses router_losses() const;
  // Weight of the router losses in the training loss (see MoELayer::set_router_loss_scale).
  void set_router_loss_scale(double scale);

  std::shared_ptr<VocabParallelEmbedding> embed_tokens;
  std::vector<std::shared_ptr<DecoderLayer>> layers;
  std::shared_ptr<Norm> norm;
  std::shared_ptr<ColumnParallelLinear> lm_head;  // null with tied embeddings

 private:
  LayerContext ctx_;
  bool recompute_full_;
  int64_t recompute_num_layers_;
};

}  // namespace foldtron
