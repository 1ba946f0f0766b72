// Per-step hooks: work the trainer runs around every optimizer step without knowing what it is
// (the routers' expert-bias update today; a memory bank refresh later). Registered on the Trainer.
#pragma once

#include <string>

#include "training/metrics.h"
#include "training/train_state.h"

namespace foldtron {

class StepHook {
 public:
  virtual ~StepHook() = default;
  virtual std::string name() const = 0;
  virtual void before_step(TrainState& /*state*/) {}
  // After the optimizer, also after a skipped (non-finite) step.
  virtual void after_step(TrainState& /*state*/, const StepRecord& /*record*/) {}
};

// Aux-loss-free load balancing (moe.expert_bias): each router's selection bias moves against its
// experts' load of the step. Collective over tp x dp x cp per MoE layer.
class ExpertBiasUpdate : public StepHook {
 public:
  std::string name() const override { return "expert_bias"; }
  void after_step(TrainState& state, const StepRecord& record) override;
};

}  // namespace foldtron
