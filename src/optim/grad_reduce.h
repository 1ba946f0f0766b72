// Gradient finalization after backward, before the optimizer step:
//   1. parameters marked sequence_parallel (norm weights, row-parallel biases under SP) saw only
//      this rank's sequence chunk: their gradients are summed over tp;
//   2. every gradient is summed over dp_cp, the ranks that hold the same parameters but saw
//      other data (losses are already scaled by the global token count, so a sum gives the
//      gradient of the global mean).
// Unbucketed and blocking; bucketing and overlap with backward come with the GPU path.
#pragma once

#include <torch/nn/module.h>

#include "layers/context.h"

namespace foldtron {

class ProcessGroups;

void finalize_grads(torch::nn::Module& model, const ParamRegistry& registry, const ProcessGroups& groups);

}  // namespace foldtron
