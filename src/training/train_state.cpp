// The train state (see train_state.h).
#include "training/train_state.h"

#include <chrono>

#include <torch/cuda.h>

#include "models/registry.h"

namespace foldtron {

TrainState::TrainState(const Config& config_in, ProcessGroups& groups_in, torch::Device device_in)
    : config(config_in), groups(groups_in), device(device_in) {
  // Seconds until the device has finished the work (initial values are copied without waiting).
  auto seconds_since = [this](std::chrono::steady_clock::time_point start) {
    if (device.is_cuda()) torch::cuda::synchronize();
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };
  const auto start = std::chrono::steady_clock::now();
  model = build_model(config, groups, device);
  model->train();
  startup.model_s = seconds_since(start);
  startup.init = *model->context().init_times;
  const auto built = std::chrono::steady_clock::now();
  BufferOptions options;
  options.bucket_bytes = static_cast<int64_t>(config.parallel.grad_bucket_mb * (1 << 20));
  options.shard = config.parallel.distributed_optimizer;
  options.overlap = config.parallel.overlap_grad_reduce;
  options.fuse_wgrad = config.parallel.gradient_accumulation_fusion;
  options.grad_dtype = config.train.main_grads_dtype == DType::kBfloat16 ? torch::kBFloat16 : torch::kFloat;
  buffers = std::make_unique<ParamBuffers>(model->parameters(), model->registry(), groups, options);
  optimizer = std::make_unique<AdamW>(*buffers, config.train);
  startup.optimizer_s = seconds_since(built);
}

}  // namespace foldtron
