// Everything a training run carries from step to step, in one place, so a checkpoint can save and
// load it whole: the model (with its parameter registry, RNG streams and the routers' expert-bias
// buffers), the parameter and gradient buffers, the optimizer, and the progress counters.
#pragma once

#include <cstdint>
#include <memory>

#include <torch/types.h>

#include "config/config.h"
#include "layers/context.h"
#include "models/model.h"
#include "optim/adamw.h"
#include "optim/param_buffer.h"

namespace foldtron {

class ProcessGroups;

struct TrainState {
  // Builds the model for this rank (build_model), its buffers and the optimizer.
  TrainState(const Config& config, ProcessGroups& groups, torch::Device device);

  Config config;
  ProcessGroups& groups;
  torch::Device device;
  std::shared_ptr<Model> model;
  std::unique_ptr<ParamBuffers> buffers;
  std::unique_ptr<AdamW> optimizer;
  int64_t step = 0;                // optimizer steps taken (skipped ones included)
  int64_t consumed_samples = 0;    // training samples of the global batches so far
  int64_t bad_steps_in_a_row = 0;  // non-finite steps since the last good one
  // What building it took (the trainer's startup line).
  struct Startup {
    double model_s = 0;      // building and initializing the model
    InitTimes init;          // of which drawing and copying the initial values
    double optimizer_s = 0;  // its parameter and gradient buffers and the optimizer
  } startup;
};

}  // namespace foldtron
