// AdamW, clipping norm and learning-rate schedule (see adamw.h).
#include "optim/adamw.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>
#include <torch/torch.h>

#include "core/errors.h"
#include "core/torch_compat.h"
#ifdef FOLDTRON_WITH_CUDA
#include <c10/cuda/CUDAStream.h>
#include <torch/csrc/autograd/variable.h>
#endif

#include "parallel/communicator.h"
#include "parallel/process_groups.h"

namespace foldtron {

double learning_rate(const TrainConfig& train, int64_t step) {
  if (train.lr_warmup_iters > 0 && step < train.lr_warmup_iters) {
    return train.lr * static_cast<double>(step + 1) / static_cast<double>(train.lr_warmup_iters);
  }
  const int64_t decay_iters = (train.lr_decay_iters > 0 ? train.lr_decay_iters : train.train_iters);
  const int64_t decay_steps = std::max<int64_t>(decay_iters - train.lr_warmup_iters, 1);
  const double progress =
      std::min(1.0, static_cast<double>(step - train.lr_warmup_iters) / static_cast<double>(decay_steps));
  switch (train.lr_decay_style) {
    case LrDecay::kConstant: return train.lr;
    case LrDecay::kLinear: return train.min_lr + (train.lr - train.min_lr) * (1.0 - progress);
    case LrDecay::kCosine: return train.min_lr + 0.5 * (train.lr - train.min_lr) * (1.0 + std::cos(M_PI * progress));
  }
  return train.lr;
}

double global_grad_norm(const ParamBuffers& buffers, const ParamRegistry& registry, const ProcessGroups& groups) {
  // Dense parameters: tp x pp ranks hold disjoint parts (replicated ones counted on tp rank 0,
  // the tied embedding on the first stage);
  // experts: etp x ep x pp ranks do (replicated over etp: counted on etp rank 0). Sharded
  // buffers split each part further over dp_cp / edp.
  std::vector<torch::Tensor> counted[2];  // dense, expert
  for (const ShardSegment& segment : buffers.segments()) {
    const ParamInfo info = registry.info(segment.param);
    const bool replicated = info.tp_split_dim < 0;
    if (replicated && (info.expert ? groups.coords().etp : groups.coords().tp) != 0) continue;
    if (info.stage_tied && groups.coords().pp != 0) continue;  // the last stage's copy
    counted[info.expert ? 1 : 0].push_back(segment.grad);
  }
  // Sums of squares on the gradients' device; one host read at the end. On CUDA one fused
  // multi-tensor norm per kind, with fp32 results (bf16 gradients need torch >= 2.6 for that:
  // before, its results have the inputs' dtype); elsewhere fp64 per tensor, which on an H200 took
  // 30 ms a step more than the fused norm for the reference's bf16 gradients.
  torch::Tensor sums;  // [2]: dense, expert
  for (int kind = 0; kind < 2; ++kind) {
    if (counted[kind].empty()) continue;
    const torch::Tensor& first = counted[kind].front();
    if (!sums.defined()) sums = torch::zeros({2}, first.options().dtype(torch::kDouble));
    const bool fp32 = std::all_of(counted[kind].begin(), counted[kind].end(),
                                  [](const torch::Tensor& g) { return g.scalar_type() == torch::kFloat; });
    if (torch_compat::has_foreach_norm() && first.is_cuda() && (fp32 || torch_compat::has_foreach_norm_of_16bit())) {
      sums[kind] += torch::stack(torch_compat::foreach_norm(counted[kind])).to(torch::kDouble).pow(2).sum();
      continue;
    }
    for (const torch::Tensor& grad : counted[kind]) {
      const torch::Tensor norm = at::linalg_vector_norm(grad, 2, c10::nullopt, false, torch::kDouble);
      sums[kind] += norm * norm;
    }
  }
  const torch::Tensor host = sums.defined() ? sums.cpu() : torch::zeros({2}, torch::kDouble);
  if (buffers.sharded()) {
    // Every element lives in exactly one rank's shard of one model-parallel rank: a world sum.
    torch::Tensor total = host.sum().reshape({1});
    groups.world().all_reduce(total);
    return std::sqrt(total.item<double>());
  }
  torch::Tensor dense = host.narrow(0, 0, 1).clone(), expert = host.narrow(0, 1, 1).clone();
  groups.tp_pp().all_reduce(dense);
  groups.get(GroupKind::kEtpEpPp).all_reduce(expert);
  return std::sqrt(dense.item<double>() + expert.item<double>());
}

#ifdef FOLDTRON_WITH_CUDA
struct AdamW::CudaPlan {
  torch::Tensor table;  // the planned AdamWCudaSegment array, on the device
  int64_t count = 0, tiles = 0;
  CudaDtype moments = CudaDtype::kFloat32;
};
#else
struct AdamW::CudaPlan {};
#endif

AdamW::~AdamW() = default;

AdamW::AdamW(ParamBuffers& buffers, const TrainConfig& train) : buffers_(buffers), train_(train) {
  torch::NoGradGuard no_grad;
  const torch::Device device =
      buffers.chunks().empty() ? torch::Device(torch::kCPU) : buffers.chunks().front().value.device();
  const torch::ScalarType moments = train.adam_moments_dtype == DType::kBfloat16 ? torch::kBFloat16 : torch::kFloat;
  for (int64_t b = 0; b < buffers.num_buffers(); ++b) {
    const torch::TensorOptions options = torch::TensorOptions().dtype(torch::kFloat).device(device);
    main_.push_back(torch::zeros({buffers.shard_numel(b)}, options));
    exp_avg_.push_back(torch::zeros({buffers.shard_numel(b)}, options.dtype(moments)));
    exp_avg_sq_.push_back(torch::zeros({buffers.shard_numel(b)}, options.dtype(moments)));
  }
  for (const ShardSegment& segment : buffers.segments()) {
    const auto b = static_cast<size_t>(segment.buffer);
    const int64_t n = segment.grad.numel();
    segments_.push_back({main_[b].narrow(0, segment.shard_offset, n), segment.grad,
                         exp_avg_[b].narrow(0, segment.shard_offset, n), exp_avg_sq_[b].narrow(0, segment.shard_offset, n),
                         segment.value, segment.param.dim() > 1,  // no decay on norm weights and biases
                         segment.param, segment.param_begin});
  }
  reset_from_params();
#ifdef FOLDTRON_WITH_CUDA
  if (device.is_cuda() && !segments_.empty()) {
    // The buffers never move, so the kernel's table of pointers is built once.
    cuda_ = std::make_unique<CudaPlan>();
    cuda_->moments = moments == torch::kBFloat16 ? CudaDtype::kBFloat16 : CudaDtype::kFloat32;
    std::vector<AdamWCudaSegment> table;
    for (Segment& s : segments_) {
      const torch::ScalarType param = s.value.scalar_type();
      FT_CHECK(param == torch::kFloat || param == torch::kBFloat16,
               fmt::format("fused AdamW: parameters of dtype {}", c10::toString(param)));
      AdamWCudaSegment entry;
      entry.main = s.main.data_ptr<float>();
      const torch::ScalarType grad = s.grad.scalar_type();
      FT_CHECK(grad == torch::kFloat || grad == torch::kBFloat16,
               fmt::format("fused AdamW: gradients of dtype {}", c10::toString(grad)));
      entry.grad = s.grad.data_ptr();
      entry.grad_bf16 = grad == torch::kBFloat16 ? 1 : 0;
      entry.exp_avg = s.exp_avg.data_ptr();
      entry.exp_avg_sq = s.exp_avg_sq.data_ptr();
      entry.param = s.value.data_ptr();
      entry.param_bf16 = param == torch::kBFloat16 ? 1 : 0;
      entry.numel = s.main.numel();
      entry.decay = s.decay ? 1 : 0;
      table.push_back(entry);
    }
    cuda_->count = static_cast<int64_t>(table.size());
    cuda_->tiles = adamw_cuda_plan(table.data(), cuda_->count, cuda_->moments);
    const auto bytes = static_cast<int64_t>(table.size() * sizeof(AdamWCudaSegment));
    cuda_->table = torch::from_blob(table.data(), {bytes}, torch::kUInt8).to(device);
  }
#endif
}

void AdamW::step(double lr, double grad_scale) {
  torch::NoGradGuard no_grad;
  ++steps_;
#ifdef FOLDTRON_WITH_CUDA
  if (cuda_) {
    adamw_cuda_step(reinterpret_cast<const AdamWCudaSegment*>(cuda_->table.data_ptr()), cuda_->count, cuda_->tiles,
                    cuda_->moments, step_scalars(lr, grad_scale), c10::cuda::getCurrentCUDAStream().stream());
    // The kernel wrote the parameters behind autograd's back: a graph that saved them is stale.
    for (Segment& s : segments_) torch::autograd::impl::bump_version(s.value);
    buffers_.gather_params();
    return;
  }
#endif
  step_reference(lr, grad_scale);
  buffers_.gather_params();
}

// The step's scalars, computed in double and rounded to fp32 once, for both update paths.
AdamWCudaStep AdamW::step_scalars(double lr, double grad_scale) const {
  const auto t = static_cast<double>(steps_);
  AdamWCudaStep step;
  step.step_size = static_cast<float>(lr / (1.0 - std::pow(train_.adam_beta1, t)));
  step.bias2_sqrt = static_cast<float>(std::sqrt(1.0 - std::pow(train_.adam_beta2, t)));
  step.beta1 = static_cast<float>(train_.adam_beta1);
  step.beta2 = static_cast<float>(train_.adam_beta2);
  step.one_minus_beta1 = static_cast<float>(1.0 - train_.adam_beta1);
  step.one_minus_beta2 = static_cast<float>(1.0 - train_.adam_beta2);
  step.eps = static_cast<float>(train_.adam_eps);
  step.decay_factor = static_cast<float>(1.0 - lr * train_.weight_decay);
  step.grad_scale = static_cast<float>(grad_scale);
  return step;
}

// The update in torch operations (any device), in the CUDA kernel's order of operations: fp32
// throughout, moments rounded to their storage dtype after use. (Contracted multiply-adds can
// make the two differ in the last bit, and then a bf16 moment may round the other way.)
void AdamW::step_reference(double lr, double grad_scale) {
  const AdamWCudaStep step = step_scalars(lr, grad_scale);
  for (Segment& s : segments_) {
    const torch::Tensor fp32_grad = s.grad.to(torch::kFloat);  // bf16 main gradients are read as fp32
    const torch::Tensor grad = grad_scale != 1.0 ? fp32_grad * step.grad_scale : fp32_grad;
    // fp32 moments are updated in place; bf16 ones through an fp32 copy.
    torch::Tensor exp_avg = s.exp_avg.to(torch::kFloat), exp_avg_sq = s.exp_avg_sq.to(torch::kFloat);
    if (s.decay && train_.weight_decay > 0) s.main.mul_(step.decay_factor);  // decoupled
    exp_avg.mul_(step.beta1).add_(grad, step.one_minus_beta1);
    exp_avg_sq.mul_(step.beta2).addcmul_(grad, grad, step.one_minus_beta2);
    const torch::Tensor denom = (exp_avg_sq.sqrt() / step.bias2_sqrt).add_(step.eps);
    s.main.addcdiv_(exp_avg, denom, -step.step_size);
    if (!exp_avg.is_same(s.exp_avg)) {
      s.exp_avg.copy_(exp_avg);
      s.exp_avg_sq.copy_(exp_avg_sq);
    }
    s.value.copy_(s.main);  // the model's parameter from the main copy
  }
}

void AdamW::reset_from_params() {
  torch::NoGradGuard no_grad;
  for (size_t b = 0; b < main_.size(); ++b) {
    exp_avg_[b].zero_();
    exp_avg_sq_[b].zero_();
  }
  for (const ShardChunk& chunk : buffers_.chunks()) {
    main_[static_cast<size_t>(chunk.buffer)].narrow(0, chunk.shard_offset, chunk.value.numel()).copy_(chunk.value);
  }
  steps_ = 0;
}

std::vector<AdamW::StateSegment> AdamW::state_segments() const {
  std::vector<StateSegment> out;
  for (const Segment& s : segments_) out.push_back({s.param, s.begin, s.main, s.exp_avg, s.exp_avg_sq});
  return out;
}

int64_t AdamW::state_bytes() const { return state_bytes(false) + state_bytes(true); }

int64_t AdamW::state_bytes(bool expert) const {
  int64_t bytes = 0;
  for (size_t b = 0; b < main_.size(); ++b) {
    if (buffers_.buffer_is_expert(static_cast<int64_t>(b)) != expert) continue;
    bytes += main_[b].numel() * 4 + 2 * exp_avg_[b].numel() * static_cast<int64_t>(exp_avg_[b].element_size());
  }
  return bytes;
}

}  // namespace foldtron
