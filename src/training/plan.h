// The layout planner behind `foldtron plan`: for a model config, a GPU count and a hardware
// profile it lists the folded layouts the trainer accepts (tp, cp, pp, vpp, ep, etp, dp,
// micro-batch, recomputation, distributed optimizer) with the memory and step time each is
// predicted to take, ranked by step time.
//
// The step-time model adds up what one rank does per step:
//  - GEMMs (attention projections, dense/shared MLP, output layer), the experts' grouped GEMMs and
//    their per-expert weight gradients, and core attention, each from the profile's measured
//    kernel time of the nearest measured shape, scaled by FLOPs (configs/hardware/<gpu>.json,
//    written by bench/calibrate_planner.py on that GPU);
//  - the memory-bound work between them (norms, rotary, SwiGLU, permutation, residual adds) as
//    bytes at the profile's fitted rate, and the idle gaps between kernels per layer;
//  - communication that the trainer does not overlap (sequence-parallel all-gathers and
//    reduce-scatters, the expert all-to-alls, context-parallel exchanges, pipeline transfers,
//    the gradient reduction beyond what the last backward hides) from the measured NCCL times;
//  - recomputation's extra forward, the pipeline bubble (pp-1)/vpp micro-batches, the gradient
//    norm and the AdamW pass as HBM traffic.
// Memory per rank: the states (bf16 parameters, fp32 gradient buffers, fp32 main weights and
// moments, sharded by the distributed optimizer) plus the activations each layer keeps per
// token (from what the layers save), times the micro-batches a pipeline stage holds in flight.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "config/config.h"
#include "training/hardware_profile.h"

namespace foldtron {

// One candidate layout.
struct PlanLayout {
  int64_t tp = 1, cp = 1, pp = 1, vpp = 1, ep = 1, etp = 1, dp = 1, edp = 1;
  int64_t micro_batch = 1;
  Recompute recompute = Recompute::kNone;
  bool distributed_optimizer = false;
  bool sequence_parallel = false;
};

struct PlanPrediction {
  PlanLayout layout;
  // Per rank (the busiest pipeline stage), GiB.
  double state_gib = 0, activation_gib = 0, memory_gib = 0;
  // Seconds per step and its parts (they add up to step_s).
  double step_s = 0, compute_s = 0, memory_bound_s = 0, gaps_s = 0, comm_s = 0, bubble_s = 0, optimizer_s = 0;
  double mfu = 0;
  bool fits = true;
};

// The layout a (validated) config describes over `gpus` ranks.
PlanLayout plan_layout_of(const Config& config, int64_t gpus);

// The trainer's config for one layout: `base` with the layout's parallel, micro-batch and
// recomputation keys set.
Config config_for_layout(const Config& base, const PlanLayout& layout);

// Predicts one layout of `config` (its train.global_batch_size and seq_length) over `gpus` ranks.
PlanPrediction predict_layout(const Config& config, const PlanLayout& layout, int64_t gpus,
                              const HardwareProfile& profile);

// Which axes the user fixed (empty: free).
struct PlanPins {
  std::optional<int64_t> tp, cp, pp, vpp, ep, etp, micro_batch;
  std::optional<Recompute> recompute;
  std::optional<bool> distributed_optimizer;
};

// Every layout over `gpus` ranks that passes the trainer's config validation and the pins,
// predicted and sorted: layouts that fit in memory first, then by step time. Searched: tp up to
// a node, every cp, pp dividing the layers (vpp dividing its share), ep dividing the experts,
// etp 1 or tp, micro-batch 1, 2 or 4, every recomputation, with and without the distributed
// optimizer; a pinned value outside those is tried too. Sequence parallelism is on where tp > 1,
// and the rank order is the default one.
std::vector<PlanPrediction> plan_layouts(const Config& config, int64_t gpus, const HardwareProfile& profile,
                                         const PlanPins& pins);

// "tp2 cp1 pp1 ep2 etp1 dp1 mb2 sp selective" style summary of a layout.
std::string describe_layout(const PlanLayout& layout);

}  // namespace foldtron
