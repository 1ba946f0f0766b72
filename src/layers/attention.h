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
// x [s, b, heads, d] rotated by position: x*cos + rotate_half(x)*sin. Contiguous bf16 on CUDA
// runs the fused kernels (layers/rotary_cuda.h); anything else, torch's operations.
torch::Tensor apply_rotary(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin);

// Softmax attention of q [b, hq, sq, d] over k, v [b, hkv, sk, d] (hq a multiple of hkv), causal
// (sq == sk) or not, scaled by `scale`: the explicit formula, used on torch 1.13, with dropout, and
// by the tests. `on_probs`, when given, transforms the fp32 probabilities [b, hq, sq, sk]
// (dropout); `mask`, when given, is a bool [sq, sk] of the pairs that take part.
torch::Tensor core_attention_reference(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                       bool causal, double scale,
                                       const std::function<torch::Tensor(const torch::Tensor&)>& on_probs = {},
                                       const torch::Tensor& mask = {});

class Attention : public torch::nn::Module {
 public:
  Attention(const LayerContext& ctx, const std::string& name, const ModelConfig& model);
  // x [s, b, h] ([s/tp, b, h] with sequence parallelism); positions [s] of these tokens in their
  // sequence (with context parallelism: this rank's chunks, cp_positions).
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

  // Scaled dot-product attention of q [b, hq, sq, d] over k, v [b, hkv, sk, d]: causal when `mask`
  // is undefined, else over the pairs of the bool [sq, sk] mask.
  torch::Tensor core_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                               const torch::Tensor& mask);
  // Core attention, over the context-parallel group when there is one.
  torch::Tensor attend(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v);
};

}  // namespace foldtron
