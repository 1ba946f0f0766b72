// The dense MLP (see mlp.h).
#include "layers/mlp.h"

#include <torch/torch.h>

namespace foldtron {

Mlp::Mlp(const LayerContext& ctx, const std::string& name, int64_t hidden, int64_t ffn, Activation activation,
         double init_std)
    : activation_(activation) {
  if (activation == Activation::kSwiglu) {
    gate_proj = register_module("gate_proj",
                                std::make_shared<ColumnParallelLinear>(ctx, name + ".gate_proj", hidden, ffn, false, init_std));
  }
  up_proj = register_module("up_proj",
                            std::make_shared<ColumnParallelLinear>(ctx, name + ".up_proj", hidden, ffn, false, init_std));
  down_proj = register_module("down_proj",
                              std::make_shared<RowParallelLinear>(ctx, name + ".down_proj", ffn, hidden, false, init_std));
}

torch::Tensor Mlp::forward(const torch::Tensor& x) {
  if (activation_ == Activation::kSwiglu) {
    return down_proj->forward(torch::silu(gate_proj->forward(x)) * up_proj->forward(x));  // [s, b, f/tp] inside
  }
  return down_proj->forward(torch::gelu(up_proj->forward(x)));
}

}  // namespace foldtron
