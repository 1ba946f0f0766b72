// AdamW with decoupled weight decay (none on 1-D parameters: norm weights and biases), fp32 main
// parameters and fp32 or bf16 moments (sharded over dp_cp / edp with the distributed optimizer), global
// gradient-norm clipping, and the learning-rate schedule.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include <torch/types.h>

#include "config/config.h"
#include "parallel/sharding.h"
#include "optim/adamw_cuda.h"
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
// parameters and moments (fp32, or bf16 with train.adam_moments_dtype) for that shard only; the
// update refreshes the model's parameters from the main copy, and then every rank's are gathered
// (ParamBuffers::gather_params). On CUDA one fused kernel (optim/adamw_cuda.h) does the whole
// update in a single pass.
class AdamW {
 public:
  AdamW(ParamBuffers& buffers, const TrainConfig& train);
  ~AdamW();

  // One update with learning rate `lr`, gradients scaled by `grad_scale` (clipping) as they are
  // read; the buffers' gradients are left as they are.
  void step(double lr, double grad_scale = 1.0);
  int64_t steps() const { return steps_; }
  // Bytes of optimizer state on this rank: fp32 main parameters and the two moments of its
  // shard (gradients live in the buffers: ParamBuffers::grad_bytes).
  int64_t state_bytes() const;
  int64_t state_bytes(bool expert) const;  // of the dense or the expert parameters

  // The state of this rank's elements of each parameter (checkpoints): elements
  // [begin, begin + main.numel()) of the parameter's shard (row-major), views of the state.
  struct StateSegment {
    torch::Tensor param;
    int64_t begin = 0;
    torch::Tensor main, exp_avg, exp_avg_sq;  // [n]
  };
  std::vector<StateSegment> state_segments() const;
  // After the parameters were replaced (a checkpoint without optimizer state): main weights from
  // the parameters, moments zero, no steps taken.
  void reset_from_params();
  void set_steps(int64_t steps) { steps_ = steps; }

 private:
  struct Segment {
    torch::Tensor main, grad, exp_avg, exp_avg_sq;
    torch::Tensor value;  // the model parameter's elements, refreshed from `main`
    bool decay;
    torch::Tensor param;  // the parameter
    int64_t begin;        // its first element here
  };
  struct CudaPlan;  // the fused kernel's segment table on the device

  AdamWCudaStep step_scalars(double lr, double grad_scale) const;
  void step_reference(double lr, double grad_scale);

  ParamBuffers& buffers_;
  std::vector<torch::Tensor> main_, exp_avg_, exp_avg_sq_;  // per buffer group, this rank's shard
  std::vector<Segment> segments_;
  std::unique_ptr<CudaPlan> cuda_;
  TrainConfig train_;
  int64_t steps_ = 0;
};

}  // namespace foldtron
