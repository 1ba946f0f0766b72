// Tensor-parallel linear layers (Megatron-Core's ColumnParallelLinear / RowParallelLinear).
//
// Column: Y = X A^T + b with A [out, in] split along out: this rank holds A_r [out/tp, in].
//   input  [s, b, in] replicated over tp, or [s/tp, b, in] with sequence parallelism (gathered
//   here); output [s, b, out/tp], or [s, b, out] with gather_output.
// Row: Y = X A^T + b with A split along in: this rank holds A_r [out, in/tp].
//   input [s, b, in/tp] (already split, from a column layer); the partial products are summed
//   over tp (all-reduce), or reduce-scattered to [s/tp, b, out] with sequence parallelism; the
//   bias is added once, after the reduction.
#pragma once

#include <string>

#include <torch/nn/module.h>

#include "layers/context.h"

namespace foldtron {

// The input of a column-parallel product: [s/tp, b, in] all-gathered to [s, b, in] with
// sequence parallelism (backward reduce-scatters), else [s, b, in] entering the tp region
// (backward all-reduces the input gradient over tp).
torch::Tensor enter_column_parallel(const torch::Tensor& x, const LayerContext& ctx);

class ColumnParallelLinear : public torch::nn::Module {
 public:
  // `padded_out` zero rows are appended to the [out, in] weight before it is split (a vocabulary
  // padded to a multiple of tp); the initial values do not depend on it.
  ColumnParallelLinear(const LayerContext& ctx, const std::string& name, int64_t in, int64_t out, bool bias,
                       double init_std, bool gather_output = false, int64_t padded_out = 0);
  torch::Tensor forward(const torch::Tensor& x);

  torch::Tensor weight;  // [out/tp, in]
  torch::Tensor bias;    // [out/tp] or undefined

 private:
  LayerContext ctx_;
  bool gather_output_;
};

class RowParallelLinear : public torch::nn::Module {
 public:
  RowParallelLinear(const LayerContext& ctx, const std::string& name, int64_t in, int64_t out, bool bias,
                    double init_std);
  torch::Tensor forward(const torch::Tensor& x);

  torch::Tensor weight;  // [out, in/tp]
  torch::Tensor bias;    // [out] or undefined (replicated)

 private:
  LayerContext ctx_;
};

}  // namespace foldtron
