// Model-parallel RNG streams (see rng.h).
#include "parallel/rng.h"

#include <mutex>

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>
#ifdef FOLDTRON_WITH_CUDA
#include <ATen/cuda/CUDAGeneratorImpl.h>
#endif

#include "core/errors.h"
#include "parallel/topology.h"

namespace foldtron {
namespace {

constexpr uint64_t kModelParallelOffset = 2718;  // Megatron-Core's model-parallel seed offset
constexpr uint64_t kExpertParallelOffset = 1024;  // and its expert-parallel one

at::Generator make_generator(uint64_t seed, torch::Device device) {
  if (device.is_cuda()) {
#ifdef FOLDTRON_WITH_CUDA
    at::Generator generator = at::cuda::detail::createCUDAGenerator(device.index());
    generator.set_current_seed(seed);
    return generator;
#else
    throw CommError("a CUDA random stream was requested in a build without CUDA", "keep tensors on the CPU");
#endif
  }
  return at::detail::createCPUGenerator(seed);
}

}  // namespace

RngTracker::RngTracker(int64_t seed, const RankCoords& coords, torch::Device device) {
  const auto base = static_cast<uint64_t>(seed);
  seeds_[RngStream::kData] = base;
  seeds_[RngStream::kModelParallel] = base + kModelParallelOffset + static_cast<uint64_t>(coords.tp);
  seeds_[RngStream::kExpertParallel] = base + kExpertParallelOffset + 100 * static_cast<uint64_t>(coords.ep) +
                                       static_cast<uint64_t>(coords.etp);
  for (const auto& [stream, s] : seeds_) generators_.emplace(stream, make_generator(s, device));
}

at::Generator& RngTracker::generator(RngStream stream) { return generators_.at(stream); }

uint64_t RngTracker::seed(RngStream stream) const { return seeds_.at(stream); }

torch::Tensor RngTracker::dropout(const torch::Tensor& x, double p, RngStream stream) {
  if (p <= 0.0) return x;
  FT_CHECK(p < 1.0, "dropout probability must be below 1");
  torch::Tensor mask = torch::empty_like(x).bernoulli_(1.0 - p, generator(stream));
  return x * mask / (1.0 - p);
}

std::vector<torch::Tensor> RngTracker::states() {
  std::vector<torch::Tensor> out;
  for (auto& [stream, generator] : generators_) {
    std::lock_guard<std::mutex> lock(generator.mutex());
    out.push_back(generator.get_state());
  }
  return out;
}

void RngTracker::set_states(const std::vector<torch::Tensor>& states) {
  FT_CHECK(states.size() == generators_.size(), "RNG states of another tracker");
  size_t i = 0;
  for (auto& [stream, generator] : generators_) {
    std::lock_guard<std::mutex> lock(generator.mutex());
    generator.set_state(states[i++]);
  }
}

}  // namespace foldtron
