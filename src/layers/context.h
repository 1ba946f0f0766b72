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
#include <memory>
#include <string>
#include <vector>

#include <torch/types.h>

#include "config/config.h"

namespace foldtron {

class Communicator;
class ProcessGroups;
class RngTracker;

// How a parameter is laid out. Dense parameters are split over tp (or replicated) and hold the
// same values on every dp x cp rank; expert parameters hold experts
// [expert_begin, expert_begin + size(0)) of their layer (split over ep), are split over etp, and
// hold the same values on every edp rank.
struct ParamInfo {
  int64_t tp_split_dim = -1;       // dimension split over tp (etp for experts); -1: replicated
  bool sequence_parallel = false;  // replicated, but fed only this rank's tokens: its gradient
                                   // must be summed over tp
  int64_t split_parts = 1;         // the split dimension holds this many fused blocks (gate|up),
                                   // each split on its own
  int64_t split_rank = 0, split_size = 1;  // this rank's place in the group it is split over
  bool expert = false;
  int64_t expert_begin = 0;
  bool stage_tied = false;  // the tied embedding/output weight, held by both the first and the last
                            // pipeline stage: its gradients are summed between them
};

// Gradient-accumulation fusion (Megatron's gradient_accumulation_fusion): the optimizer's buffers
// give each 16-bit parameter they hold a slot with its fp32 main gradient. A layer that computes
// such a parameter's weight gradient itself may write it there in fp32 (overwriting unless
// `written` or `fused`, adding otherwise) while `reducing` is off, set `fused`, and hand autograd
// an uninitialized placeholder, which the buffers then drop instead of widening it into the main
// gradient. Such a parameter must get no other gradient in the same backward (it would be summed
// into the placeholder and dropped with it).
struct MainGradSlot {
  torch::Tensor grad;      // fp32, shaped like the parameter
  bool written = false;    // holds a gradient of this step (else stale values)
  bool fused = false;      // written by a layer in this backward; autograd delivers a placeholder
  bool reducing = false;   // its bucket is being reduced: no more writes this step
};

class ParamRegistry {
 public:
  void add(const torch::Tensor& param, ParamInfo info) { infos_[param.unsafeGetTensorImpl()] = info; }
  // The info of a registered parameter; replicated when unknown.
  ParamInfo info(const torch::Tensor& param) const {
    const auto it = infos_.find(param.unsafeGetTensorImpl());
    return it == infos_.end() ? ParamInfo{} : it->second;
  }
  void attach_main_grad(const torch::Tensor& param, std::shared_ptr<MainGradSlot> slot) {
    slots_[param.unsafeGetTensorImpl()] = std::move(slot);
  }
  void detach_main_grad(const torch::Tensor& param, const MainGradSlot* slot) {
    const auto it = slots_.find(param.unsafeGetTensorImpl());
    if (it != slots_.end() && it->second.get() == slot) slots_.erase(it);
  }
  // The slot of `param`, or null (no buffers, or fusion off).
  MainGradSlot* main_grad_slot(const torch::Tensor& param) const {
    const auto it = slots_.find(param.unsafeGetTensorImpl());
    return it == slots_.end() ? nullptr : it->second.get();
  }

 private:
  std::map<const c10::TensorImpl*, ParamInfo> infos_;
  std::map<const c10::TensorImpl*, std::shared_ptr<MainGradSlot>> slots_;
};

struct LayerContext {
  Communicator* tp = nullptr;  // tensor-parallel group (size 1 without TP)
  bool sequence_parallel = false;
  int64_t seed = 1234;
  torch::Device device = torch::kCPU;
  torch::ScalarType dtype = torch::kFloat;
  RngTracker* rng = nullptr;          // dropout streams; may be null when dropout is 0
  ParamRegistry* registry = nullptr;  // may be null
  ProcessGroups* groups = nullptr;    // every group of the layout; MoE layers and cp attention need it
  CpCommType cp_comm_type = CpCommType::kAllGather;  // context-parallel attention (cp > 1)

  int64_t tp_rank() const;
  int64_t tp_size() const;
};

// The full (unsplit) tensor of parameter `name`, N(0, std^2), fp32 on ctx.device: the same on
// every rank, in every layout and on every device for the same seed (drawn on the CPU).
torch::Tensor full_normal(const LayerContext& ctx, const std::string& name, at::IntArrayRef shape, double std);

// This rank's chunk of `full` along `dim` (tp must divide it), as a parameter in ctx's dtype and
// device, registered with its split.
torch::Tensor shard_param(const LayerContext& ctx, const torch::Tensor& full, int64_t dim);
// This rank's chunk of `full` as `info` describes it (split_parts blocks of `tp_split_dim`, each
// chunked split_size ways); `full` itself when replicated.
torch::Tensor shard_of(const torch::Tensor& full, const ParamInfo& info);
// The inverse: the full tensor from every rank's `shards` (in split-rank order).
torch::Tensor unshard(const std::vector<torch::Tensor>& shards, const ParamInfo& info);
// A parameter in ctx's dtype and device with its layout registered.
torch::Tensor make_param(const LayerContext& ctx, const torch::Tensor& shard, const ParamInfo& info);
// A replicated parameter (norm weights, row-parallel biases).
torch::Tensor replicated_param(const LayerContext& ctx, const torch::Tensor& full, bool sequence_parallel);

}  // namespace foldtron
