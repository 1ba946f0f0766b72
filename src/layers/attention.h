// Multi-head attention, tensor-parallel over heads (Megatron-Core's SelfAttention /
// CrossAttention): q, k and v are column-parallel (this rank holds heads/tp query heads and
// groups/tp key/value heads), the output projection row-parallel. One module serves
//   - self-attention (keys and values from x) and cross-attention (from an encoder's output);
//   - grouped-query heads, q/k/v biases (Qwen2) or biases on every projection (Marian), per-head
//     RMSNorm of q and k before rotary (Qwen3);
//   - rotary position embeddings (Hugging Face's rotate-half convention) or none (positions added
//     to the embeddings);
//   - masks: causal or bidirectional, with or without key padding, in any combination;
//   - an incremental key/value cache for generation (self-attention appends, cross-attention
//     computes its keys and values once).
// Core attention is SDPA (flash/cuDNN kernels) where torch has it and an explicit matmul/softmax
// elsewhere (torch 1.13, attention dropout). Context parallelism (layers/context_parallel.h) runs
// causal self-attention over the cp group.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include <torch/nn/module.h>

#include "config/config.h"
#include "layers/context.h"
#include "layers/linear.h"

namespace foldtron {

class Norm;

// cos and sin tables of rotary embeddings of head dimension d at `positions`: [s] -> [s, d], or
// per sequence [s, b] -> [s, b, d].
std::pair<torch::Tensor, torch::Tensor> rotary_tables(const torch::Tensor& positions, int64_t head_dim, double theta,
                                                      torch::ScalarType dtype);
// x [s, b, heads, d] rotated by position: x*cos + rotate_half(x)*sin, with tables [s, d] or
// [s, b, d]. Contiguous bf16 on CUDA with [s, d] tables runs the fused kernels
// (layers/rotary_cuda.h); anything else, torch's operations.
torch::Tensor apply_rotary(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin);

// Key or value heads [b, hkv, s, d] repeated to the query heads [b, hkv * repeat, s, d] (grouped-
// query attention); x itself when repeat is 1.
torch::Tensor repeat_heads(const torch::Tensor& x, int64_t repeat);

// Softmax attention of q [b, hq, sq, d] over k, v [b, hkv, sk, d] (hq a multiple of hkv), scaled
// by `scale`, over the pairs `mask` allows: undefined means causal (sq == sk), else a bool
// [sq, sk] or [b, 1, sq, sk] (true: attend). The explicit formula, used on torch 1.13, with
// dropout, and by the tests. `on_probs`, when given, transforms the fp32 probabilities
// [b, hq, sq, sk] (dropout).
torch::Tensor core_attention_reference(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                       double scale, const torch::Tensor& mask = {},
                                       const std::function<torch::Tensor(const torch::Tensor&)>& on_probs = {});

// The bool mask [b, 1, sq, sk] (true: attend) of queries at the last sq of sk key positions:
// causal or not, keys limited to key_padding [b, sk] (true: a token) when it is defined. A query
// that may see no key at all (a left-padding position) sees itself, so no row is empty.
torch::Tensor attention_mask(int64_t sq, int64_t sk, bool causal, const torch::Tensor& key_padding,
                             torch::Device device);

struct AttentionOptions {
  int64_t hidden = 0;
  int64_t heads = 0, groups = 0, head_dim = 0;  // query heads, key/value heads, channels per head
  bool qkv_bias = false;   // bias on q, k, v
  bool out_bias = false;   // bias on the output projection
  bool qk_norm = false;    // RMSNorm of each query and key head (Qwen3)
  double norm_eps = 1e-6;  // of that norm
  double rope_theta = 0;   // rotary base; 0: no rotary embedding
  bool cross = false;      // keys and values from the encoder's output
  double dropout = 0;      // on the attention probabilities
  bool recompute = false;  // selective recomputation of core attention
  double init_std = 0.02;
};

// The key/value cache of one attention layer for incremental decoding: [b, hkv/tp, s, d].
struct AttentionCache {
  torch::Tensor key, value;
  // Rows (sequences) kept, in this order: beam search reorders the cache.
  void select(const torch::Tensor& rows);
};

// What a forward needs beside x.
struct AttentionInputs {
  torch::Tensor positions;    // [s] or [s, b] positions of x's tokens (rotary)
  bool causal = true;         // self-attention: each query sees the keys up to its own position
  torch::Tensor key_padding;  // [b, sk] bool, true: a token; undefined: no padding. Self-attention
                              // with a cache: of every cached key, this step's included
  torch::Tensor memory;       // cross-attention: the encoder output [sk(/tp), b, h]
  AttentionCache* cache = nullptr;  // incremental decoding
  // The mask of these inputs when the caller built it once for every layer (attention_masks in
  // transformer_layer.h); undefined: built from causal and key_padding here.
  torch::Tensor mask;
};

class Attention : public torch::nn::Module {
 public:
  Attention(const LayerContext& ctx, const std::string& name, const AttentionOptions& options);
  // x [s, b, h] ([s/tp, b, h] with sequence parallelism) -> the same shape.
  torch::Tensor forward(const torch::Tensor& x, const AttentionInputs& in);

  std::shared_ptr<ColumnParallelLinear> q_proj, k_proj, v_proj;
  std::shared_ptr<RowParallelLinear> o_proj;
  std::shared_ptr<Norm> q_norm, k_norm;  // with qk_norm

 private:
  LayerContext ctx_;
  AttentionOptions options_;
  int64_t local_heads_, local_groups_;

  // [s, b, heads/tp * d] -> [b, heads/tp, s, d], normed and rotated as configured.
  torch::Tensor heads(const torch::Tensor& x, int64_t heads, const std::shared_ptr<Norm>& norm,
                      const AttentionInputs& in) const;
  // Scaled dot-product attention of q [b, hq, sq, d] over k, v [b, hkv, sk, d] under `mask`
  // (undefined: causal, sq == sk).
  torch::Tensor core_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                               const torch::Tensor& mask);
  // Core attention of full-sequence self-attention, over the context-parallel group when there is one.
  torch::Tensor attend(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                       const torch::Tensor& mask);
};

}  // namespace foldtron
