// Self-attention with grouped-query heads, rotary position embeddings (Hugging Face's
// rotate-half convention), optional QKV bias and a causal mask, tensor-parallel over heads:
// q/k/v are column-parallel (this rank holds heads/tp query heads and groups/tp key/value
// heads), the output projection row-parallel. Core attention is an explicit matmul/softmax
// where SDPA is missing (torch 1.13) and SDPA (flash/cuDNN kernels) where present.
#pragma once

#include <functional>
#include <memory>

#include <torch/nn/module.h>

#include "config/config.h"
#include "layers/context.h"
#include "layers/linear.h"

namespace foldtron {

// cos and sin tables [s, d] for rotary embeddings of head dimension d at `positions` [s].
std::pair<torch::Tensor, torch::Tensor> rotary_tables(const torch::Tensor& positions, int64_t head_dim, double theta,
                                                      torch::ScalarType dtype);
// x [s, b, heads, d] rotated by position: x*cos + rotate_half(x)*sin.
torch::Tensor apply_rotary(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin);

// Softmax attention of q [b, hq, s, d] over k, v [b, hkv, s, d] (hq a multiple of hkv), causal or
// not, scaled by `scale`: the explicit formula, used on torch 1.13, with dropout, and by the tests.
// `on_probs`, when given, transforms the fp32 probabilities [b, hq, s, s] (dropout).
torch::Tensor core_attention_reference(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                       bool causal, double scale,
                                       const std::function<torch::Tensor(const torch::Tensor&)>& on_probs = {});

class Attention : public torch::nn::Module {
 public:
  Attention(const LayerContext& ctx, const std::string& name, const ModelConfig& model);
  // x [s, b, h] ([s/tp, b, h] with sequence parallelism); positions [s] of the full sequence.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& positions);

  std::shared_ptr<ColumnParallelLinear> q_proj, k_proj, v_proj;
  std::shared_ptr<RowParallelLinear> o_proj;

 private:
  LayerContext ctx_;
  int64_t local_heads_;
  int64_t local_groups_;
  int64_t head_dim_;
  double rope_theta_;
  double dropout_;
  bool recompute_core_;

  // Scaled dot-product attention of q [b, hq, s, d], k, v [b, hkv, s, d] (causal).
  torch::Tensor core_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v);
};

}  // namespace foldtron
