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
#include <map>
#include <string>

#include <torch/types.h>

namespace foldtron {

class Communicator;
class RngTracker;

// How a parameter is laid out over the tensor-parallel group.
struct ParamInfo {
  int64_t tp_split_dim = -1;       // dimension split over tp; -1: replicated on every tp rank
  bool sequence_parallel = false;  // replicated, but fed only this rank's sequence chunk: its
                                   // gradient must be summed over tp
};

class ParamRegistry {
 public:
  void add(const torch::Tensor& param, ParamInfo info) { infos_[param.unsafeGetTensorImpl()] = info; }
  // The info of a registered parameter; replicated when unknown.
  ParamInfo info(const torch::Tensor& param) const {
    const auto it = infos_.find(param.unsafeGetTensorImpl());
    return it == infos_.end() ? ParamInfo{} : it->second;
  }

 private:
  std::map<const c10::TensorImpl*, ParamInfo> infos_;
};

struct LayerContext {
  Communicator* tp = nullptr;  // tensor-parallel group (size 1 without TP)
  bool sequence_parallel = false;
  int64_t seed = 1234;
  torch::Device device = torch::kCPU;
  torch::ScalarType dtype = torch::kFloat;
  RngTracker* rng = nullptr;          // dropout streams; may be null when dropout is 0
  ParamRegistry* registry = nullptr;  // may be null

  int64_t tp_rank() const;
  int64_t tp_size() const;
};

// The full (unsplit) tensor of parameter `name`, N(0, std^2), fp32 on the CPU: the same on
// every rank and in every layout for the same seed.
torch::Tensor full_normal(const LayerContext& ctx, const std::string& name, at::IntArrayRef shape, double std);

// This rank's chunk of `full` along `dim` (tp must divide it), as a parameter in ctx's dtype and
// device, registered with its split.
torch::Tensor shard_param(const LayerContext& ctx, const torch::Tensor& full, int64_t dim);
// A replicated parameter (norm weights, row-parallel biases).
torch::Tensor replicated_param(const LayerContext& ctx, const torch::Tensor& full, bool sequence_parallel);

}  // namespace foldtron
