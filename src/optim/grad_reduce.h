// Gradient finalization after backward, before the optimizer step:
//   1. parameters marked sequence_parallel (norm weights, row-parallel biases under SP) saw only
//      this rank's sequence chunk: their gradients are summed over tp;
//   2. dense gradients are summed over dp_cp and expert gradients over edp: the ranks that hold
//      the same parameters but saw other data (losses are already scaled by the global token
//      count, so a sum gives the gradient of the global mean).
// Gradients travel in flat buckets of up to `bucket_bytes` (all in flight at once); overlapping
// the buckets with backward comes with the GPU path.
#pragma once

#include <cstdint>
#include <vector>

#include <torch/nn/module.h>

#include "layers/context.h"

namespace foldtron {

class ProcessGroups;

// A parameter and the gradient the optimizer uses for it: its .grad, or the fp32 main gradient
// of a bf16/fp16 parameter (see AdamW::accumulate_grads).
struct ParamGrad {
  torch::Tensor param;
  torch::Tensor grad;
};

// Every parameter of `model` that has a .grad.
std::vector<ParamGrad> model_grads(torch::nn::Module& model);

void finalize_grads(const std::vector<ParamGrad>& grads, const ParamRegistry& registry, const ProcessGroups& groups,
                    int64_t bucket_bytes = int64_t{40} << 20);
inline void finalize_grads(torch::nn::Module& model, const ParamRegistry& registry, const ProcessGroups& groups,
                           int64_t bucket_bytes = int64_t{40} << 20) {
  finalize_grads(model_grads(model), registry, groups, bucket_bytes);
}

}  // namespace foldtron
