// One Transformer layer for every model family:
//   pre-norm   h = x + attn(norm1(x)) [; h = h + cross(norm2(h))]; out = h + ffn(norm3(h))
//   post-norm  h = norm1(x + attn(x)) [; h = norm2(h + cross(h))]; out = norm3(h + ffn(h))
// with dropout on each sublayer's output. Self-attention is causal or bidirectional with optional
// key padding; cross-attention (decoder layers of an encoder-decoder) reads the encoder's output;
// the feed-forward block is a dense MLP or the MoE layer (FeedForward). Submodules are named by
// role, the same in every family: self_attn, self_attn_norm, cross_attn, cross_attn_norm, mlp,
// mlp_norm (each model maps them to its checkpoint names).
//
// ForwardState carries what one forward of a model collects beside activations (router losses,
// hidden states) and the key/value cache of incremental decoding.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include <torch/nn/module.h>

#include "config/config.h"
#include "layers/attention.h"
#include "layers/mlp.h"
#include "layers/norm.h"

namespace foldtron {

// The key/value caches of a model's layers for incremental decoding (generation/).
struct KVCache {
  struct Layer {
    AttentionCache self, cross;
  };
  std::map<int64_t, Layer> layers;  // by global layer index
  torch::Tensor key_padding;        // [b, cached + new] bool: which cached keys are tokens; undefined: all
  torch::Tensor encoder_padding;    // [b, s_src] bool: the encoder's key padding (cross-attention)
  bool encoder_done = false;        // an encoder-decoder's encoder ran and its keys/values are cached

  // Keeps rows `rows` (int64 [b']) of every cache, in that order (beam search).
  void select(const torch::Tensor& rows);
};

struct ForwardState {
  // Router losses of the MoE layers run in this forward: this rank's shares, coefficients
  // applied, detached (their gradients ride on the layers' outputs); undefined when none.
  torch::Tensor aux_loss, z_loss;
  // When set, the residual stream before each layer of the chunk (and after the final norm).
  std::vector<torch::Tensor>* hidden_states = nullptr;
  KVCache* cache = nullptr;  // incremental decoding

  void add_router_losses(const torch::Tensor& aux, const torch::Tensor& z);
};

// What a layer's forward needs beside x.
struct LayerInputs {
  torch::Tensor positions;    // [s] or [s, b]: rotary positions
  bool causal = true;         // self-attention
  torch::Tensor key_padding;  // [b, sk] bool self-attention key padding (with a cache: all keys)
  torch::Tensor memory;       // [s_src(/tp), b, h]: the encoder output (cross-attention)
  torch::Tensor memory_padding;  // [b, s_src] bool
  torch::Tensor token_mask;   // [s(/tp), b] bool: the tokens the MoE router may route
  // The attention masks of every layer, built once by attention_masks (undefined: each attention
  // builds its own, or takes the fused causal path).
  torch::Tensor self_mask, memory_mask;
};

// Builds in.self_mask and in.memory_mask once for a stack of layers whose queries are `queries`
// positions long (the whole sequence, also under sequence parallelism), over `memory_length`
// encoder positions: decoding would otherwise rebuild them in every layer at every step. Leaves
// self_mask undefined where the attention needs none (causal without key padding: the fused
// kernels and context parallelism) or cannot know its keys (a cache without key padding); the
// same for memory_mask (a cached encoder without padding).
void attention_masks(LayerInputs& in, int64_t queries, int64_t memory_length, bool cached, torch::Device device);

struct TransformerLayerOptions {
  int64_t index = 0;  // global layer index (cache key)
  NormPosition norm_position = NormPosition::kPre;
  Normalization normalization = Normalization::kRmsNorm;
  int64_t hidden = 0;
  double norm_eps = 1e-5;
  double dropout = 0;  // on each sublayer's output
  AttentionOptions attention;
  bool cross_attention = false;
};

class TransformerLayer : public torch::nn::Module {
 public:
  // `name`: the parameter-name prefix the initial weights are drawn for.
  TransformerLayer(const LayerContext& ctx, const std::string& name, const TransformerLayerOptions& options,
                   std::shared_ptr<FeedForward> ffn);
  // x [s(/tp), b, h] -> the same shape.
  torch::Tensor forward(const torch::Tensor& x, const LayerInputs& in, ForwardState& state);

  std::shared_ptr<Attention> self_attn, cross_attn;  // cross_attn: decoder layers of an encoder-decoder
  std::shared_ptr<Norm> self_attn_norm, cross_attn_norm, mlp_norm;
  std::shared_ptr<FeedForward> mlp;

 private:
  torch::Tensor drop(const torch::Tensor& x);

  LayerContext ctx_;
  TransformerLayerOptions options_;
};

}  // namespace foldtron
