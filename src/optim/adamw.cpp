// AdamW, clipping norm and learning-rate schedule (see adamw.h).
#include "optim/adamw.h"

#include <cmath>

#include <torch/torch.h>

#include "core/torch_compat.h"

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
  // multi-tensor norm per kind (fp32); elsewhere fp64 per tensor.
  torch::Tensor sums;  // [2]: dense, expert
  for (int kind = 0; kind < 2; ++kind) {
    if (counted[kind].empty()) continue;
    const torch::Tensor& first = counted[kind].front();
    if (!sums.defined()) sums = torch::zeros({2}, first.options().dtype(torch::kDouble));
#if FOLDTRON_TORCH_AT_LEAST(2, 1)
    if (first.is_cuda()) {
      sums[kind] += torch::stack(at::_foreach_norm(counted[kind], 2)).to(torch::kDouble).pow(2).sum();
      continue;
    }
#endif
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

AdamW::AdamW(ParamBuffers& buffers, const TrainConfig& train) : buffers_(buffers), train_(train) {
  torch::NoGradGuard no_grad;
  for (int64_t b = 0; b < buffers.num_buffers(); ++b) {
    const torch::TensorOptions options =
        torch::TensorOptions().dtype(torch::kFloat).device(buffers.chunks().empty() ? torch::Device(torch::kCPU)
                                                                                     : buffers.chunks().front().value.device());
    main_.push_back(torch::zeros({buffers.shard_numel(b)}, options));
    exp_avg_.push_back(torch::zeros({buffers.shard_numel(b)}, options));
    exp_avg_sq_.push_back(torch::zeros({buffers.shard_numel(b)}, options));
  }
  for (const ShardChunk& chunk : buffers.chunks()) {
    main_[static_cast<size_t>(chunk.buffer)].narrow(0, chunk.shard_offset, chunk.value.numel()).copy_(chunk.value);
  }
  for (const ShardSegment& segment : buffers.segments()) {
    const auto b = static_cast<size_t>(segment.buffer);
    const int64_t n = segment.grad.numel();
    segments_.push_back({main_[b].narrow(0, segment.shard_offset, n), segment.grad,
                         exp_avg_[b].narrow(0, segment.shard_offset, n), exp_avg_sq_[b].narrow(0, segment.shard_offset, n),
                         torch::Tensor(), segment.param.dim() > 1});  // no decay on norm weights and biases
  }
}

void AdamW::step(double lr, double grad_scale) {
  torch::NoGradGuard no_grad;
  ++steps_;
  bool fused = false;
#if FOLDTRON_TORCH_AT_LEAST(2, 1)
  if (!segments_.empty() && segments_.front().main.is_cuda()) {
    step_fused(lr, grad_scale);
    fused = true;
  }
#endif
  if (!fused) {
    const double beta1 = train_.adam_beta1, beta2 = train_.adam_beta2;
    const double bias1 = 1.0 - std::pow(beta1, static_cast<double>(steps_));
    const double bias2 = 1.0 - std::pow(beta2, static_cast<double>(steps_));
    for (Segment& s : segments_) {
      if (grad_scale != 1.0) s.grad.mul_(grad_scale);  // clipped in place, as the fused kernel does
      const torch::Tensor& grad = s.grad;
      if (s.decay && train_.weight_decay > 0) s.main.mul_(1.0 - lr * train_.weight_decay);  // decoupled
      s.exp_avg.mul_(beta1).add_(grad, 1.0 - beta1);
      s.exp_avg_sq.mul_(beta2).addcmul_(grad, grad, 1.0 - beta2);
      const torch::Tensor denom = (s.exp_avg_sq / bias2).sqrt_().add_(train_.adam_eps);
      s.main.addcdiv_(s.exp_avg, denom, -lr / bias1);
    }
  }
  // The model's parameters from the main copy: this rank's shard, then every rank's.
  for (const ShardChunk& chunk : buffers_.chunks()) {
    chunk.value.copy_(main_[static_cast<size_t>(chunk.buffer)].narrow(0, chunk.shard_offset, chunk.value.numel()));
  }
  buffers_.gather_params();
}

#if FOLDTRON_TORCH_AT_LEAST(2, 1)
// The same update through torch's fused multi-tensor AdamW kernel (CUDA): one launch per group
// of tensors instead of eight element-wise passes per parameter.
void AdamW::step_fused(double lr, double grad_scale) {
  for (const bool decay : {true, false}) {
    std::vector<torch::Tensor> mains, grads, exp_avgs, exp_avg_sqs, steps;
    for (Segment& s : segments_) {
      if (s.decay != decay) continue;
      if (!s.step.defined()) s.step = torch::zeros({}, s.main.options());
      mains.push_back(s.main);
      grads.push_back(s.grad);
      exp_avgs.push_back(s.exp_avg);
      exp_avg_sqs.push_back(s.exp_avg_sq);
      steps.push_back(s.step);
    }
    if (mains.empty()) continue;
    at::_foreach_add_(steps, 1.0);
    // The kernel divides the gradients by `grad_scale` (AMP's loss scale) in the same pass as the
    // update and writes them back so: the clipping factor costs no pass of its own.
    c10::optional<torch::Tensor> inverse_scale;
    if (grad_scale != 1.0) inverse_scale = torch::full({}, 1.0 / grad_scale, mains.front().options());
    at::_fused_adamw_(mains, grads, exp_avgs, exp_avg_sqs, {}, steps, lr, train_.adam_beta1, train_.adam_beta2,
                      decay ? train_.weight_decay : 0.0, train_.adam_eps, false, false, inverse_scale, c10::nullopt);
  }
}
#endif

int64_t AdamW::state_bytes() const { return state_bytes(false) + state_bytes(true); }

int64_t AdamW::state_bytes(bool expert) const {
  int64_t bytes = 0;
  for (size_t b = 0; b < main_.size(); ++b) {
    if (buffers_.buffer_is_expert(static_cast<int64_t>(b)) == expert) bytes += 3 * main_[b].numel() * 4;  // main, 2 moments
  }
  return bytes;
}

}  // namespace foldtron
