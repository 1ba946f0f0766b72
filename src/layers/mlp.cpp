// The dense MLP (see mlp.h).
#include "layers/mlp.h"

#include <torch/torch.h>

namespace foldtron {

torch::Tensor activate(const torch::Tensor& x, Activation activation) {
  switch (activation) {
    case Activation::kGelu:
      return torch::gelu(x);
    case Activation::kRelu:
      return torch::relu(x);
    case Activation::kSilu:
    case Activation::kSwiglu:
      return torch::silu(x);
  }
  return x;
}

Mlp::Mlp(const LayerContext& ctx, const std::string& name, int64_t hidden, int64_t ffn, Activation activation,
         bool bias, double init_std)
    : activation_(activation) {
  if (activation == Activation::kSwiglu) {
    gate_proj = register_module(
        "gate_proj", std::make_shared<ColumnParallelLinear>(ctx, name + ".gate_proj", hidden, ffn, bias, init_std));
  }
  up_proj = register_module("up_proj",
                            std::make_shared<ColumnParallelLinear>(ctx, name + ".up_proj", hidden, ffn, bias, init_std));
  down_proj = register_module(
      "down_proj", std::make_shared<RowParallelLinear>(ctx, name + ".down_proj", ffn, hidden, bias, init_std));
}

torch::Tensor Mlp::forward(const torch::Tensor& x, const torch::Tensor& /*token_mask*/, ForwardState& /*state*/) {
  return forward(x);
}

torch::Tensor Mlp::forward(const torch::Tensor& x) {
  if (activation_ == Activation::kSwiglu) {
    return down_proj->forward(torch::silu(gate_proj->forward(x)) * up_proj->forward(x));  // [s, b, f/tp] inside
  }
  return down_proj->forward(activate(up_proj->forward(x), activation_));
}

}  // namespace foldtron
