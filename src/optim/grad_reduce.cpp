// Gradient finalization (see grad_reduce.h).
#include "optim/grad_reduce.h"

#include <torch/torch.h>

#include "parallel/process_groups.h"

namespace foldtron {

void finalize_grads(torch::nn::Module& model, const ParamRegistry& registry, const ProcessGroups& groups) {
  for (const auto& param : model.parameters()) {
    torch::Tensor grad = param.mutable_grad();
    if (!grad.defined()) continue;
    if (registry.info(param).sequence_parallel) groups.tp().all_reduce(grad);  // tp: SP-replicated weights
    groups.dp_cp().all_reduce(grad);                                          // dp_cp: data-parallel sum
  }
}

}  // namespace foldtron
