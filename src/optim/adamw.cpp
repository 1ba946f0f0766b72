// AdamW, clipping norm and learning-rate schedule (see adamw.h).
#include "optim/adamw.h"

#include <cmath>

#include <torch/torch.h>

#include "core/torch_compat.h"

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

double global_grad_norm(const std::vector<ParamGrad>& grads, const ParamRegistry& registry,
                        const ProcessGroups& groups) {
  // Dense parameters: tp x pp ranks hold disjoint parts (replicated ones counted on tp rank 0);
  // experts: etp x ep x pp ranks do (replicated over etp: counted on etp rank 0).
  std::vector<torch::Tensor> counted[2];  // dense, expert
  for (const ParamGrad& item : grads) {
    if (!item.grad.defined()) continue;
    const ParamInfo info = registry.info(item.param);
    const bool replicated = info.tp_split_dim < 0;
    if (replicated && (info.expert ? groups.coords().etp : groups.coords().tp) != 0) continue;
    counted[info.expert ? 1 : 0].push_back(item.grad);
  }
  // Sums of squares on the gradients' device; one host read at the end. On CUDA one fused
  // multi-tensor norm per kind (in the gradients' dtype, fp32); elsewhere fp64 per tensor.
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
  torch::Tensor dense = torch::zeros({1}, torch::kDouble), expert = torch::zeros({1}, torch::kDouble);
  if (sums.defined()) {
    const torch::Tensor host = sums.cpu();
    dense[0] = host[0];
    expert[0] = host[1];
  }
  groups.tp_pp().all_reduce(dense);
  groups.get(GroupKind::kEtpEpPp).all_reduce(expert);
  return std::sqrt(dense.item<double>() + expert.item<double>());
}

AdamW::AdamW(std::vector<torch::Tensor> params, const TrainConfig& train) : train_(train) {
  for (torch::Tensor& param : params) {
    // Every gradient exists from the start (zeros; for 16-bit parameters the fp32 main
    // gradient), so that every rank reduces the same set of tensors even when a parameter took
    // no part in a step (an expert that received no token).
    Slot slot;
    slot.param = param;
    slot.separate_main = param.scalar_type() != torch::kFloat;
    if (!slot.separate_main && !param.grad().defined()) param.mutable_grad() = torch::zeros_like(param);
    slot.main = slot.separate_main ? param.detach().to(torch::kFloat).clone() : param.detach();
    if (slot.separate_main) slot.main_grad = torch::zeros_like(slot.main);
    slot.exp_avg = torch::zeros_like(slot.main);
    slot.exp_avg_sq = torch::zeros_like(slot.main);
    slot.decay = param.dim() > 1;  // no decay on norm weights and biases
    slots_.push_back(std::move(slot));
  }
}

void AdamW::accumulate_grads() {
  torch::NoGradGuard no_grad;
  for (Slot& slot : slots_) {
    if (!slot.separate_main || !slot.param.grad().defined()) continue;
    slot.main_grad.add_(slot.param.grad().to(torch::kFloat));
    slot.param.mutable_grad() = torch::Tensor();  // the fp32 main gradient holds it; free the 16-bit copy
  }
}

std::vector<ParamGrad> AdamW::grads() const {
  std::vector<ParamGrad> out;
  for (const Slot& slot : slots_) {
    if (slot.grad().defined()) out.push_back({slot.param, slot.grad()});
  }
  return out;
}

void AdamW::step(double lr, double grad_scale) {
  torch::NoGradGuard no_grad;
  ++steps_;
#if FOLDTRON_TORCH_AT_LEAST(2, 1)
  if (!slots_.empty() && slots_.front().main.is_cuda()) {
    step_fused(lr, grad_scale);
    return;
  }
#endif
  const double beta1 = train_.adam_beta1, beta2 = train_.adam_beta2;
  const double bias1 = 1.0 - std::pow(beta1, static_cast<double>(steps_));
  const double bias2 = 1.0 - std::pow(beta2, static_cast<double>(steps_));
  for (Slot& slot : slots_) {
    if (!slot.grad().defined()) continue;
    torch::Tensor grad = slot.grad().to(torch::kFloat);
    if (grad_scale != 1.0) grad = grad * grad_scale;
    if (slot.decay && train_.weight_decay > 0) slot.main.mul_(1.0 - lr * train_.weight_decay);  // decoupled
    slot.exp_avg.mul_(beta1).add_(grad, 1.0 - beta1);
    slot.exp_avg_sq.mul_(beta2).addcmul_(grad, grad, 1.0 - beta2);
    const torch::Tensor denom = (slot.exp_avg_sq / bias2).sqrt_().add_(train_.adam_eps);
    slot.main.addcdiv_(slot.exp_avg, denom, -lr / bias1);
    if (slot.separate_main) slot.param.copy_(slot.main);  // refresh the bf16 weights
  }
}

#if FOLDTRON_TORCH_AT_LEAST(2, 1)
// The same update through torch's fused multi-tensor AdamW kernel (CUDA): one launch per group
// of tensors instead of eight element-wise passes per parameter.
void AdamW::step_fused(double lr, double grad_scale) {
  for (const bool decay : {true, false}) {
    std::vector<torch::Tensor> mains, grads, exp_avgs, exp_avg_sqs, steps, params, refreshed;
    for (Slot& slot : slots_) {
      if (slot.decay != decay || !slot.grad().defined()) continue;
      if (!slot.step.defined()) slot.step = torch::zeros({}, slot.main.options());
      mains.push_back(slot.main);
      grads.push_back(slot.grad());
      exp_avgs.push_back(slot.exp_avg);
      exp_avg_sqs.push_back(slot.exp_avg_sq);
      steps.push_back(slot.step);
      if (slot.separate_main) {
        params.push_back(slot.param);
        refreshed.push_back(slot.main);
      }
    }
    if (mains.empty()) continue;
    if (grad_scale != 1.0) at::_foreach_mul_(grads, grad_scale);
    at::_foreach_add_(steps, 1.0);
    at::_fused_adamw_(mains, grads, exp_avgs, exp_avg_sqs, {}, steps, lr, train_.adam_beta1, train_.adam_beta2,
                      decay ? train_.weight_decay : 0.0, train_.adam_eps, false, false, c10::nullopt, c10::nullopt);
    for (size_t i = 0; i < params.size(); ++i) params[i].copy_(refreshed[i]);  // refresh the bf16 weights
  }
}
#endif

void AdamW::zero_grad() {
  for (Slot& slot : slots_) {
    if (slot.param.grad().defined()) slot.param.mutable_grad().zero_();
    if (slot.separate_main) slot.main_grad.zero_();
  }
}

int64_t AdamW::state_bytes() const {
  int64_t bytes = 0;
  for (const Slot& slot : slots_) {
    bytes += 2 * slot.exp_avg.numel() * 4;
    if (slot.separate_main) bytes += 2 * slot.main.numel() * 4;  // main weights and main gradients
  }
  return bytes;
}

}  // namespace foldtron
