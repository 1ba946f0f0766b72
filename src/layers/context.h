// What every parallel layer needs to build itself: its tensor-parallel group, whether sequence
// parallelism is on, the seed its full weights are drawn from, device and dtype, the RNG streams
// for dropout, and a registry that records how each parameter is split (for gradient
// reduction, checkpoints and the equivalence tests).
//
// Initialization does not depend on the layout: a parameter's full tensor is drawn from a
// generator seeded by (seed, parameter name) and each rank keeps its slice, so every layout
// starts from the same model.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <torch/types.h>

#include "config/config.h"
#include "parallel/sharding.h"

namespace foldtron {

class Communicator;
class ProcessGroups;
class RngTracker;

// What full_normal has cost the models built on one context (the trainer's startup line).
struct InitTimes {
  double draw_s = 0;  // drawing the values on the host
  double copy_s = 0;  // copying them to the device and scaling them there
  int64_t values = 0;
  int threads = 1;  // the most host threads one draw used
};

struct LayerContext {
  Communicator* tp = nullptr;  // tensor-parallel group (size 1 without TP)
  bool sequence_parallel = false;  // as built (parameter layout, gradient reduction); sp() says
                                   // whether a forward splits the sequence now
  int64_t seed = 1234;
  torch::Device device = torch::kCPU;
  torch::ScalarType dtype = torch::kFloat;
  RngTracker* rng = nullptr;          // dropout streams; may be null when dropout is 0
  ParamRegistry* registry = nullptr;  // may be null
  ProcessGroups* groups = nullptr;    // every group of the layout; MoE layers and cp attention need it
  CpCommType cp_comm_type = CpCommType::kAllGather;  // context-parallel attention (cp > 1)

  // Set while generating: every rank then runs whole sequences of its own share of the batch, so
  // sequence and context parallelism are off (the weights are the same either way). Shared by
  // every copy of the context, hence by every layer of a model; see DecodingScope.
  std::shared_ptr<bool> decoding = std::make_shared<bool>(false);
  // Shared the same way: full_normal adds what each draw cost (models are built on one thread).
  std::shared_ptr<InitTimes> init_times = std::make_shared<InitTimes>();

  int64_t tp_rank() const;
  int64_t tp_size() const;
  // Whether a forward now splits the sequence over tp (sequence parallelism) / over cp.
  bool sp() const { return sequence_parallel && !*decoding; }
  bool context_parallel() const;
};

// Turns sequence and context parallelism off for the models built on `ctx` while it lives.
class DecodingScope {
 public:
  explicit DecodingScope(const LayerContext& ctx) : flag_(ctx.decoding), before_(*flag_) { *flag_ = true; }
  ~DecodingScope() { *flag_ = before_; }
  DecodingScope(const DecodingScope&) = delete;
  DecodingScope& operator=(const DecodingScope&) = delete;

 private:
  std::shared_ptr<bool> flag_;
  bool before_;
};

// The full (unsplit) tensor of parameter `name`, N(0, std^2), fp32 on ctx.device: the same on
// every rank, in every layout and on every device for the same seed (drawn on the CPU, by as many
// threads as torch's intra-op count, at::get_num_threads()).
torch::Tensor full_normal(const LayerContext& ctx, const std::string& name, at::IntArrayRef shape, double std);

// This rank's chunk of `full` along `dim` (tp must divide it after `padded_rows` zero rows are
// appended), as a parameter in ctx's dtype and device, registered with its split.
torch::Tensor shard_param(const LayerContext& ctx, const torch::Tensor& full, int64_t dim, int64_t padded_rows = 0);
// A parameter in ctx's dtype and device with its layout registered.
torch::Tensor make_param(const LayerContext& ctx, const torch::Tensor& shard, const ParamInfo& info);
// A replicated parameter (norm weights, row-parallel biases).
torch::Tensor replicated_param(const LayerContext& ctx, const torch::Tensor& full, bool sequence_parallel);

}  // namespace foldtron
