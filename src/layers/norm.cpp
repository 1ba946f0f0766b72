// RMSNorm and LayerNorm (see norm.h).
#include "layers/norm.h"

#include <torch/torch.h>

namespace foldtron {

Norm::Norm(const LayerContext& ctx, Normalization kind, int64_t hidden, double eps) : kind_(kind), eps_(eps) {
  weight = register_parameter("weight", replicated_param(ctx, torch::ones({hidden}), ctx.sequence_parallel));
  if (kind == Normalization::kLayerNorm) {
    bias = register_parameter("bias", replicated_param(ctx, torch::zeros({hidden}), ctx.sequence_parallel));
  }
}

torch::Tensor Norm::forward(const torch::Tensor& x) {
  if (kind_ == Normalization::kLayerNorm) {
    return torch::layer_norm(x, {x.size(-1)}, weight, bias, eps_);
  }
  const torch::Tensor x32 = x.to(torch::kFloat);
  const torch::Tensor normed = x32 * torch::rsqrt(x32.pow(2).mean(-1, true) + eps_);
  return weight * normed.to(x.scalar_type());
}

}  // namespace foldtron
