// Model-parallel random number streams. Parameters are initialized from the seed alone (every
// layout builds the same full weights), so only dropout needs per-rank streams:
//   - "data": seed + 0 on every rank. Used outside
//     tensor-parallel regions, where activations are replicated over tp and must drop alike.
//   - "model_parallel": differs across tp ranks, matches across dp ranks: seed + 2718 + tp_rank
//     (Megatron-Core's offset). Used inside tensor-parallel regions (sharded activations).
//   - "expert_parallel": differs across ep and etp ranks: seed + 1024 + 100 * ep_rank + etp_rank
//     (Megatron-Core's expert offset). Used inside experts, whose tokens differ per ep/etp rank.
// Streams are explicit generators handed to the random op, never swapped into the global one.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <ATen/core/Generator.h>
#include <torch/types.h>

namespace foldtron {

struct RankCoords;

enum class RngStream { kData, kModelParallel, kExpertParallel };

class RngTracker {
 public:
  // Streams for this rank's coordinates, on `device` (CPU or CUDA).
  RngTracker(int64_t seed, const RankCoords& coords, torch::Device device);

  at::Generator& generator(RngStream stream);
  // Seed of a stream for this rank (exposed for tests and logs).
  uint64_t seed(RngStream stream) const;

  // Dropout with the given stream: x * mask / (1 - p), mask ~ Bernoulli(1 - p).
  torch::Tensor dropout(const torch::Tensor& x, double p, RngStream stream);

  // Every stream's state, and restoring them (activation recomputation replays the same masks).
  std::vector<torch::Tensor> states();
  void set_states(const std::vector<torch::Tensor>& states);

 private:
  std::map<RngStream, at::Generator> generators_;
  std::map<RngStream, uint64_t> seeds_;
};

}  // namespace foldtron
