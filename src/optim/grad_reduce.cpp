// Gradient finalization (see grad_reduce.h).
#include "optim/grad_reduce.h"

#include <torch/torch.h>

#include "core/errors.h"
#include "parallel/process_groups.h"

namespace foldtron {
namespace {

// Gradients packed into flat buckets of one dtype and device, each all-reduced as one message;
// all buckets are in flight together and unpacked as they complete.
void all_reduce_bucketed(const std::vector<torch::Tensor>& grads, Communicator& group, int64_t bucket_bytes) {
  struct Bucket {
    std::vector<torch::Tensor> grads;
    int64_t bytes = 0;
  };
  std::vector<Bucket> buckets;
  for (const torch::Tensor& grad : grads) {
    const int64_t bytes = grad.numel() * grad.element_size();
    if (buckets.empty() || buckets.back().bytes + bytes > bucket_bytes ||
        buckets.back().grads.front().scalar_type() != grad.scalar_type() ||
        buckets.back().grads.front().device() != grad.device()) {
      buckets.emplace_back();
    }
    buckets.back().grads.push_back(grad);
    buckets.back().bytes += bytes;
  }
  std::vector<torch::Tensor> flats;
  std::vector<WorkPtr> works;
  for (const Bucket& bucket : buckets) {
    std::vector<torch::Tensor> pieces;
    for (const torch::Tensor& grad : bucket.grads) pieces.push_back(grad.reshape({-1}));
    flats.push_back(torch::cat(pieces));
    works.push_back(group.all_reduce_async(flats.back()));
  }
  for (size_t b = 0; b < buckets.size(); ++b) {
    works[b]->wait();
    int64_t offset = 0;
    for (const torch::Tensor& grad : buckets[b].grads) {
      grad.view({-1}).copy_(flats[b].narrow(0, offset, grad.numel()));
      offset += grad.numel();
    }
  }
}

}  // namespace

std::vector<ParamGrad> model_grads(torch::nn::Module& model) {
  std::vector<ParamGrad> out;
  for (const auto& param : model.parameters()) {
    if (param.grad().defined()) out.push_back({param, param.grad()});
  }
  return out;
}

void finalize_grads(const std::vector<ParamGrad>& grads, const ParamRegistry& registry, const ProcessGroups& groups,
                    int64_t bucket_bytes) {
  std::vector<torch::Tensor> dense, expert, sequence_parallel;
  for (const ParamGrad& item : grads) {
    FT_CHECK(item.grad.is_contiguous(), "gradients are expected to be contiguous");
    const ParamInfo info = registry.info(item.param);
    (info.expert ? expert : dense).push_back(item.grad);
    if (info.sequence_parallel) sequence_parallel.push_back(item.grad);
  }
  // tp: weights replicated under sequence parallelism saw only this rank's tokens.
  if (groups.tp().size() > 1 && !sequence_parallel.empty()) {
    all_reduce_bucketed(sequence_parallel, groups.tp(), bucket_bytes);
  }
  // dp x cp: the same dense parameters, other data.
  if (groups.dp_cp().size() > 1 && !dense.empty()) all_reduce_bucketed(dense, groups.dp_cp(), bucket_bytes);
  // edp: the same experts, other tokens.
  if (groups.edp().size() > 1 && !expert.empty()) all_reduce_bucketed(expert, groups.edp(), bucket_bytes);
}

}  // namespace foldtron
