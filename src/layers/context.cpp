// Layout-independent parameter initialization (see context.h).
#include "layers/context.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <exception>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <torch/torch.h>

#include "core/errors.h"
#include "parallel/communicator.h"
#include "parallel/process_groups.h"

namespace foldtron {
namespace {

// FNV-1a: a stable hash of the parameter name (std::hash may differ between libraries).
uint64_t fnv1a(const std::string& text) {
  uint64_t hash = 1469598103934665603ull;
  for (unsigned char c : text) {
    hash ^= c;
    hash *= 1099511628211ull;
  }
  return hash;
}

torch::Tensor as_param(const LayerContext& ctx, const torch::Tensor& value) {
  return value.to(ctx.device, ctx.dtype).contiguous().set_requires_grad(true);
}

}  // namespace

int64_t LayerContext::tp_rank() const { return tp ? tp->rank() : 0; }
int64_t LayerContext::tp_size() const { return tp ? tp->size() : 1; }
bool LayerContext::context_parallel() const { return groups != nullptr && groups->cp().size() > 1 && !*decoding; }

torch::Tensor full_normal(const LayerContext& ctx, const std::string& name, at::IntArrayRef shape, double std) {
  // Blocks of 2^20 values, each from its own generator (block 0's seed is the tensor's, so
  // smaller tensors are one torch::randn), filled by several threads: the values depend on the
  // name, the seed and the shape only, not on the thread count.
  constexpr int64_t kBlock = int64_t{1} << 20;
  const uint64_t seed = fnv1a(name) ^ static_cast<uint64_t>(ctx.seed);
  // For a GPU the values go through pinned host memory, which torch's caching host allocator
  // hands from tensor to tensor, and the device does the rest (stacking, sharding, the dtype):
  // the host makes no fresh pages per tensor and copies nothing else.
  const bool staged = !ctx.device.is_cpu();
  const auto start = std::chrono::steady_clock::now();
  torch::Tensor full = torch::empty(shape, torch::TensorOptions().dtype(torch::kFloat).pinned_memory(staged));
  torch::Tensor flat = full.view({-1});
  const int64_t count = flat.numel(), blocks = (count + kBlock - 1) / kBlock;
  auto fill = [&](int64_t block) {
    // splitmix64 of the block index keeps neighbouring blocks' seeds unrelated; torch's mt19937
    // keeps 32 bits of a seed, so the high half is folded in (not for block 0).
    uint64_t mix = static_cast<uint64_t>(block) * 0x9e3779b97f4a7c15ull;
    mix = (mix ^ (mix >> 30)) * 0xbf58476d1ce4e5b9ull;
    mix = (mix ^ (mix >> 27)) * 0x94d049bb133111ebull;
    const uint64_t block_seed = seed ^ mix ^ (mix >> 31);
    at::Generator generator = at::detail::createCPUGenerator(block == 0 ? seed : block_seed ^ (block_seed >> 32));
    flat.narrow(0, block * kBlock, std::min(kBlock, count - block * kBlock)).normal_(0.0, 1.0, generator);
  };
  // Plain threads taking blocks in turn, as many as torch's intra-op setting (CPU runs keep it at
  // 1). Not at::parallel_for: its OpenMP loop is an inline function of ATen's headers, compiled
  // into our files without -fopenmp, hence serial (the reference model's startup took 27 s through
  // it whatever the thread count, 4.0 s with 16 of these; docs/performance.md).
  const int threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), blocks)));
  std::atomic<int64_t> next{0};
  std::exception_ptr failure;
  std::mutex failure_mutex;
  auto worker = [&] {
    try {
      for (int64_t block = next++; block < blocks; block = next++) fill(block);
    } catch (...) {
      std::lock_guard<std::mutex> lock(failure_mutex);
      if (!failure) failure = std::current_exception();
      next = blocks;  // the others stop too
    }
  };
  std::vector<std::thread> pool;
  pool.reserve(static_cast<size_t>(threads - 1));
  try {
    for (int t = 1; t < threads; ++t) pool.emplace_back(worker);
  } catch (const std::system_error&) {
    // No more threads to be had: the ones started and this one draw every block all the same.
  }
  worker();
  for (auto& thread : pool) thread.join();
  if (failure) std::rethrow_exception(failure);
  const auto drawn = std::chrono::steady_clock::now();
  torch::Tensor out = staged ? full.to(ctx.device).mul_(std) : full.mul_(std);
  InitTimes& times = *ctx.init_times;
  times.draw_s += std::chrono::duration<double>(drawn - start).count();
  times.copy_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - drawn).count();
  times.values += count;
  times.threads = std::max(times.threads, static_cast<int>(pool.size()) + 1);
  return out;
}

torch::Tensor make_param(const LayerContext& ctx, const torch::Tensor& shard, const ParamInfo& info) {
  torch::Tensor param = as_param(ctx, shard);
  if (ctx.registry) ctx.registry->add(param, info);
  return param;
}

torch::Tensor shard_param(const LayerContext& ctx, const torch::Tensor& full, int64_t dim, int64_t padded_rows) {
  ParamInfo info;
  info.tp_split_dim = dim;
  info.padded_rows = padded_rows;
  info.split_rank = ctx.tp_rank();
  info.split_size = ctx.tp_size();
  return make_param(ctx, shard_of(full, info), info);
}

torch::Tensor replicated_param(const LayerContext& ctx, const torch::Tensor& full, bool sequence_parallel) {
  ParamInfo info;
  info.sequence_parallel = sequence_parallel;
  return make_param(ctx, full, info);
}

}  // namespace foldtron
