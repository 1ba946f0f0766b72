// Position-wise feed-forward blocks. FeedForward is what a TransformerLayer holds: the dense MLP
// here, or the MoE layer (moe/moe_layer.h).
//
// The dense MLP: SwiGLU (down(silu(gate(x)) * up(x)), Llama/Mixtral) or fc2(act(fc1(x))) with
// GELU, ReLU or SiLU (Marian, XLM), with or without biases. gate/up (= fc1) are column-parallel
// over the FFN dimension, down (= fc2) row-parallel: x [s, b, h] (or [s/tp, b, h] with SP) -> the
// same shape.
#pragma once

#include <memory>
#include <string>

#include <torch/nn/module.h>

#include "config/config.h"
#include "layers/linear.h"

namespace foldtron {

struct ForwardState;

class FeedForward : public torch::nn::Module {
 public:
  // x [s(/tp), b, h] -> the same shape. token_mask [s(/tp), b] bool (true: a token; undefined:
  // all are): padding is neither routed nor counted by the MoE layer's router.
  virtual torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& token_mask, ForwardState& state) = 0;
};

// act(x) for the non-gated activations.
torch::Tensor activate(const torch::Tensor& x, Activation activation);

class Mlp : public FeedForward {
 public:
  Mlp(const LayerContext& ctx, const std::string& name, int64_t hidden, int64_t ffn, Activation activation, bool bias,
      double init_std);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& token_mask, ForwardState& state) override;
  torch::Tensor forward(const torch::Tensor& x);

  std::shared_ptr<ColumnParallelLinear> gate_proj;  // SwiGLU only
  std::shared_ptr<ColumnParallelLinear> up_proj;    // fc1 without the gate
  std::shared_ptr<RowParallelLinear> down_proj;     // fc2 without the gate

 private:
  Activation activation_;
};

}  // namespace foldtron
