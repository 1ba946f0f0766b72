// RMSNorm (x * rsqrt(mean(x^2) + eps) * w, as Hugging Face computes it, in fp32; on bf16 CUDA
// tensors one fused kernel each way, layers/rmsnorm_cuda.h) and LayerNorm.
// Weights are replicated over tp; with sequence parallelism each rank normalizes only its
// sequence chunk, so the weights are registered as sequence_parallel and their gradients are
// summed over tp when gradients are finalized.
#pragma once

#include <string>

#include <torch/nn/module.h>

#include "config/config.h"
#include "layers/context.h"

namespace foldtron {

class Norm : public torch::nn::Module {
 public:
  // `partial_over_tp`: each tp rank normalizes different values with the same weights (per-head
  // norms), so their gradients are summed over tp, as with sequence parallelism.
  Norm(const LayerContext& ctx, Normalization kind, int64_t hidden, double eps, bool partial_over_tp = false);
  torch::Tensor forward(const torch::Tensor& x);  // [..., h] -> [..., h]

  torch::Tensor weight;  // [h]
  torch::Tensor bias;    // [h] (LayerNorm only)

 private:
  Normalization kind_;
  double eps_;
};

}  // namespace foldtron
