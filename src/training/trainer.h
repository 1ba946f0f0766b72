// The training loop: for each step, the global batch (the same samples on every layout for the
// same seed) is split over dp ranks and into micro-batches (gradient accumulation); losses are
// scaled by the global token count so summed gradients are those of the global mean; gradients
// are reduced in buckets during the last micro-batch's backward (ParamBuffers: over dp_cp for
// dense parameters, edp for experts; reduce-scattered with the distributed optimizer), clipped
// by the global norm, and applied by AdamW. A step
// whose loss or gradient norm is not finite is skipped with a warning; max_bad_steps in a row
// abort the run. Rank 0 logs progress (step/total, ETA, loss, lr, grad norm, tokens/s, TFLOP/s
// per GPU, MFU, memory) and writes one JSON record per logged step to logging.metrics_file.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <torch/types.h>

#include "config/config.h"
#include "layers/context.h"

namespace foldtron {

class ProcessGroups;

struct StepRecord {
  int64_t step = 0;  // 1-based
  double loss = 0, lm_loss = 0, aux_loss = 0, z_loss = 0, grad_norm = 0, lr = 0;  // loss = lm + aux + z
  int64_t tokens = 0;
  double step_time_s = 0, tokens_per_s = 0, tflops_per_gpu = 0, mfu = 0, mem_gb = 0;
  double fwd_bwd_s = 0, grad_reduce_s = 0, optimizer_s = 0;  // parts of step_time_s
  bool skipped = false;
};

// A parameter as this rank holds it: its name in the model, its values (fp32, CPU), its split.
struct RankParam {
  std::string name;
  torch::Tensor value;
  ParamInfo info;
};

struct TrainResult {
  std::vector<StepRecord> steps;
  std::string sample;  // greedy continuation of the prompt (empty when not asked)
  // Bytes of optimizer state (fp32 main weights and moments) on this rank, dense and expert.
  int64_t dense_state_bytes = 0, expert_state_bytes = 0;
  std::vector<RankParam> final_params;  // with TrainOptions::keep_final_params
};

struct TrainOptions {
  torch::Device device = torch::kCPU;
  std::string prompt;           // generate a continuation after training when not empty
  int64_t generate_tokens = 0;  // how many
  bool keep_final_params = false;  // return this rank's parameters after the last step
};

TrainResult train(const Config& config, ProcessGroups& groups, const TrainOptions& options);

// The JSON line of one record (DESIGN.md's metrics contract).
std::string metrics_json(const StepRecord& record);

}  // namespace foldtron
