// The dense MLP: SwiGLU (down(silu(gate(x)) * up(x)), Llama/Mixtral experts) or GELU
// (fc2(gelu(fc1(x)))). gate/up/fc1 are column-parallel over the FFN dimension, down/fc2
// row-parallel: x [s, b, h] (or [s/tp, b, h] with SP) -> same shape.
#pragma once

#include <memory>

#include <torch/nn/module.h>

#include "config/config.h"
#include "layers/linear.h"

namespace foldtron {

class Mlp : public torch::nn::Module {
 public:
  Mlp(const LayerContext& ctx, const std::string& name, int64_t hidden, int64_t ffn, Activation activation,
      double init_std);
  torch::Tensor forward(const torch::Tensor& x);

  std::shared_ptr<ColumnParallelLinear> gate_proj;  // SwiGLU only
  std::shared_ptr<ColumnParallelLinear> up_proj;    // fc1 for GELU
  std::shared_ptr<RowParallelLinear> down_proj;     // fc2 for GELU

 private:
  Activation activation_;
};

}  // namespace foldtron
