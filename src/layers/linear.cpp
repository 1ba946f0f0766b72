// Tensor-parallel linear layers (see linear.h).
#include "layers/linear.h"

#include <torch/torch.h>

#include "parallel/communicator.h"
#include "parallel/mappings.h"

namespace foldtron {

ColumnParallelLinear::ColumnParallelLinear(const LayerContext& ctx, const std::string& name, int64_t in, int64_t out,
                                           bool bias_on, double init_std, bool gather_output, int64_t padded_out)
    : ctx_(ctx), gather_output_(gather_output) {
  weight = register_parameter(
      "weight", shard_param(ctx, full_normal(ctx, name + ".weight", {out, in}, init_std), 0, padded_out));
  if (bias_on) bias = register_parameter("bias", shard_param(ctx, torch::zeros({out}), 0, padded_out));
}

torch::Tensor enter_column_parallel(const torch::Tensor& x, const LayerContext& ctx) {
  return ctx.sp() ? gather_from_sequence(x, *ctx.tp) : copy_to_group(x, *ctx.tp);
}

torch::Tensor ColumnParallelLinear::forward(const torch::Tensor& x) {
  torch::Tensor y = torch::nn::functional::linear(enter_column_parallel(x, ctx_), weight, bias);  // [s, b, out/tp]
  return gather_output_ ? gather_last_dim(y, *ctx_.tp) : y;
}

RowParallelLinear::RowParallelLinear(const LayerContext& ctx, const std::string& name, int64_t in, int64_t out,
                                     bool bias_on, double init_std)
    : ctx_(ctx) {
  weight = register_parameter("weight", shard_param(ctx, full_normal(ctx, name + ".weight", {out, in}, init_std), 1));
  if (bias_on) bias = register_parameter("bias", replicated_param(ctx, torch::zeros({out}), ctx.sequence_parallel));
}

torch::Tensor RowParallelLinear::forward(const torch::Tensor& x) {
  torch::Tensor partial = torch::nn::functional::linear(x, weight);  // [s, b, out], this rank's share
  torch::Tensor y = ctx_.sp() ? reduce_scatter_to_sequence(partial, *ctx_.tp)  // [s/tp, b, out]
                                           : reduce_from_group(partial, *ctx_.tp);          // [s, b, out]
  return bias.defined() ? y + bias : y;
}

}  // namespace foldtron
