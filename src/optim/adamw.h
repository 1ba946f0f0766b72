// AdamW with decoupled weight decay (none on 1-D parameters: norm weights and biases), fp32 main
// parameters and moments (sharded over dp_cp / edp with the distributed optimizer), global
// gradient-norm clipping, and the learning-rate schedule.
#pragma once

#include <cstdint>
#include <vector>

#include <torch/types.h>

#include "config/config.h"
#include "layers/context.h"
#include "optim/param_buffer.h"

namespace foldtron {

class ProcessGroups;

// Linear warmup to lr over lr_warmup_iters, then cosine / linear decay to min_lr over the
// decay steps (lr_decay_iters, or train_iters), constant afterwards; `step` counts from 0.
double learning_rate(const TrainConfig& train, int64_t step);

// The L2 norm of all gradients of the model, each element counted once: tp-split parameters
// contribute their shard on every tp rank, replicated ones only on tp rank 0 (etp for experts);
// summed over the model-parallel groups (tp_pp, etp_ep_pp), and with sharded buffers over the
// shards too. Gradients must be finalized (finish_grad_sync).
double global_grad_norm(const ParamBuffers& buffers, const ParamRegistry& registry, const ProcessGroups& groups);

// AdamW over the shard of `buffers` this rank owns (every element without sharding): fp32 main
// parameters and moments for that shard only; after the update the parameters are refreshed
// from the main copy and gathered (ParamBuffers::gather_params).
class AdamW {
 public:
  AdamW(ParamBuffers& buffers, const TrainConfig& train);

  // One update with learning rate `lr`, gradients scaled by `grad_scale` first (clipping; the
  // buffers' gradients are left scaled).
  void step(double lr, double grad_scale = 1.0);
  int64_t steps() const { return steps_; }
  // Bytes of optimizer state on this rank: fp32 main parameters and the two moments of its
  // shard (gradients live in the buffers: ParamBuffers::grad_bytes).
  int64_t state_bytes() const;
  int64_t state_bytes(bool expert) const;  // of the dense or the expert parameters

 private:
  void step_fused(double lr, double grad_scale);

  struct Segment {
    torch::Tensor main, grad, exp_avg, exp_avg_sq;
    torch::Tensor step;  // fp32 step count on the device (fused kernel only)
    bool decay;
  };
  ParamBuffers& buffers_;
  std::vector<torch::Tensor> main_, exp_avg_, exp_avg_sq_;  // per buffer group, this rank's shard
  std::vector<Segment> segments_;
  TrainConfig train_;
  int64_t steps_ = 0;
};

}  // namespace foldtron
