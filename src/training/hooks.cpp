// Per-step hooks (see hooks.h).
#include "training/hooks.h"

#include "moe/moe_layer.h"

namespace foldtron {

void ExpertBiasUpdate::after_step(TrainState& state, const StepRecord& /*record*/) {
  for (const auto& layer : state.model->moe_layers()) layer->gate->update_expert_bias();
}

}  // namespace foldtron
