// Layout-independent parameter initialization (see context.h).
#include "layers/context.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include "core/errors.h"
#include "parallel/communicator.h"

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

torch::Tensor full_normal(const LayerContext& ctx, const std::string& name, at::IntArrayRef shape, double std) {
  at::Generator generator = at::detail::createCPUGenerator(fnv1a(name) ^ static_cast<uint64_t>(ctx.seed));
  return torch::randn(shape, generator, torch::kFloat) * std;
}

torch::Tensor shard_param(const LayerContext& ctx, const torch::Tensor& full, int64_t dim) {
  const int64_t n = ctx.tp_size();
  FT_CHECK(full.size(dim) % n == 0, "parameter dimension does not split over tp");
  torch::Tensor param = as_param(ctx, full.chunk(n, dim)[ctx.tp_rank()]);
  if (ctx.registry) ctx.registry->add(param, ParamInfo{dim, false});
  return param;
}

torch::Tensor replicated_param(const LayerContext& ctx, const torch::Tensor& full, bool sequence_parallel) {
  torch::Tensor param = as_param(ctx, full);
  if (ctx.registry) ctx.registry->add(param, ParamInfo{-1, sequence_parallel});
  return param;
}

}  // namespace foldtron
