// AdamW with decoupled weight decay (none on 1-D parameters: norm weights and biases), fp32 main
// parameters and moments for bf16/fp16 models (the model's parameters are refreshed from the
// main copy after each step), global gradient-norm clipping, and the learning-rate schedule.
#pragma once

#include <cstdint>
#include <vector>

#include <torch/types.h>

#include "config/config.h"
#include "layers/context.h"
#include "optim/grad_reduce.h"

namespace foldtron {

class ProcessGroups;

// Linear warmup to lr over lr_warmup_iters, then cosine / linear decay to min_lr over the
// decay steps (lr_decay_iters, or train_iters), constant afterwards; `step` counts from 0.
double learning_rate(const TrainConfig& train, int64_t step);

// The L2 norm of all gradients of the model, each element counted once: tp-split parameters
// contribute their shard on every tp rank, replicated ones only on tp rank 0; summed over the
// model-parallel group (tp_pp). Gradients must already be finalized (identical over dp).
double global_grad_norm(const std::vector<ParamGrad>& grads, const ParamRegistry& registry,
                        const ProcessGroups& groups);

class AdamW {
 public:
  AdamW(std::vector<torch::Tensor> params, const TrainConfig& train);

  // After each micro-batch's backward: adds the gradients of bf16/fp16 parameters into their
  // fp32 main gradients and clears them, so accumulation over micro-batches is in fp32.
  // (fp32 parameters accumulate in .grad directly.)
  void accumulate_grads();
  // The gradients to finalize, clip and apply: the fp32 main gradient of a low-precision
  // parameter, the .grad of an fp32 one.
  std::vector<ParamGrad> grads() const;
  // One update with learning rate `lr`, gradients scaled by `grad_scale` first (clipping).
  void step(double lr, double grad_scale = 1.0);
  void zero_grad();
  int64_t steps() const { return steps_; }
  // Bytes of optimizer state (main parameters, main gradients and moments) on this rank.
  int64_t state_bytes() const;

 private:
  void step_fused(double lr, double grad_scale);

  struct Slot {
    torch::Tensor param;  // the model's parameter
    torch::Tensor main;       // fp32 main copy (the parameter itself when it is fp32)
    torch::Tensor main_grad;  // fp32 main gradient of a low-precision parameter
    torch::Tensor exp_avg, exp_avg_sq;
    torch::Tensor step;  // fp32 step count on the device (fused kernel only)
    bool decay;
    bool separate_main;  // main is an fp32 copy of a low-precision parameter
    torch::Tensor grad() const { return separate_main ? main_grad : param.grad(); }
  };
  std::vector<Slot> slots_;
  TrainConfig train_;
  int64_t steps_ = 0;
};

}  // namespace foldtron
