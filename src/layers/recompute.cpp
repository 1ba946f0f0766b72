// Activation recomputation (see recompute.h).
#include "layers/recompute.h"

#include <atomic>

#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/torch.h>

#include "core/errors.h"
#include "parallel/rng.h"

namespace foldtron {
namespace {

thread_local int recompute_depth = 0;
std::atomic<int64_t> recomputed_regions{0};

// Backward of a checkpointed region: recompute, then backpropagate through the recomputation.
class CheckpointBackward : public torch::autograd::Node {
 public:
  CheckpointBackward(CheckpointFn fn, const std::vector<torch::Tensor>& inputs, RngTracker* rng)
      : fn_(std::move(fn)), rng_(rng) {
    for (const torch::Tensor& input : inputs) {
      inputs_.push_back(input.detach());
      requires_grad_.push_back(input.requires_grad());
    }
    if (rng_) rng_states_ = rng_->states();
  }

  torch::autograd::variable_list apply(torch::autograd::variable_list&& grads) override {
    FT_CHECK(fn_ != nullptr, "a checkpointed region was backpropagated twice");
    std::vector<torch::Tensor> inputs;
    for (size_t i = 0; i < inputs_.size(); ++i) inputs.push_back(inputs_[i].detach().requires_grad_(requires_grad_[i]));
    std::vector<torch::Tensor> after;
    if (rng_) {
      after = rng_->states();
      rng_->set_states(rng_states_);
    }
    std::vector<torch::Tensor> outputs;
    {
      at::AutoGradMode grad_mode(true);
      ++recompute_depth;
      ++recomputed_regions;
      try {
        outputs = fn_(inputs);
      } catch (...) {
        --recompute_depth;
        throw;
      }
      --recompute_depth;
    }
    if (rng_) rng_->set_states(after);
    std::vector<torch::Tensor> roots, root_grads;
    for (size_t i = 0; i < outputs.size() && i < grads.size(); ++i) {
      if (outputs[i].requires_grad() && grads[i].defined()) {
        roots.push_back(outputs[i]);
        root_grads.push_back(grads[i]);
      }
    }
    if (!roots.empty()) torch::autograd::backward(roots, root_grads);
    torch::autograd::variable_list result;
    for (const torch::Tensor& input : inputs) result.push_back(input.requires_grad() ? input.grad() : torch::Tensor());
    fn_ = nullptr;  // release the captured state and the saved inputs
    inputs_.clear();
    rng_states_.clear();
    return result;
  }

  std::string name() const override { return "foldtron::CheckpointBackward"; }

 private:
  CheckpointFn fn_;
  RngTracker* rng_;
  std::vector<torch::Tensor> inputs_;
  std::vector<bool> requires_grad_;
  std::vector<torch::Tensor> rng_states_;
};

// Forward: x unchanged. Backward: x's gradient passes through, `loss` gets `scale`.
class AttachLossGradient : public torch::autograd::Function<AttachLossGradient> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& loss, double scale) {
    ctx->saved_data["scale"] = scale;
    ctx->saved_data["loss_sizes"] = loss.sizes().vec();
    ctx->saved_data["loss_dtype"] = static_cast<int64_t>(loss.scalar_type());
    ctx->saved_data["loss_device"] = loss.device();
    return x.view_as(x);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const torch::Tensor loss_grad = torch::full(
        ctx->saved_data["loss_sizes"].toIntVector(), ctx->saved_data["scale"].toDouble(),
        torch::TensorOptions()
            .dtype(static_cast<torch::ScalarType>(ctx->saved_data["loss_dtype"].toInt()))
            .device(ctx->saved_data["loss_device"].toDevice()));
    return {grads[0], loss_grad, torch::Tensor()};
  }
};

}  // namespace

std::vector<torch::Tensor> checkpoint(CheckpointFn fn, const std::vector<torch::Tensor>& inputs, RngTracker* rng) {
  if (!at::GradMode::is_enabled()) return fn(inputs);
  auto node = std::make_shared<CheckpointBackward>(fn, inputs, rng);
  std::vector<torch::Tensor> outputs;
  {
    at::AutoGradMode no_grad(false);
    outputs = fn(inputs);
  }
  node->set_next_edges(torch::autograd::collect_next_edges(inputs));
  for (torch::Tensor& output : outputs) {
    // apply() pairs gradient i with output i: every output must take part.
    FT_CHECK(output.defined() && output.is_floating_point(), "checkpointed functions return floating-point tensors");
    // The outputs become this node's: they must be fresh tensors, not inputs or views of them.
    bool aliases = output.is_view();
    for (const torch::Tensor& input : inputs) aliases = aliases || output.is_same(input);
    if (aliases) output = output.clone();
    torch::autograd::set_history(output, node);
  }
  return outputs;
}

bool recomputing() { return recompute_depth > 0; }

int64_t recompute_count() { return recomputed_regions.load(); }

torch::Tensor attach_loss_gradient(const torch::Tensor& x, const torch::Tensor& loss, double scale) {
  if (!loss.defined() || !loss.requires_grad() || !at::GradMode::is_enabled()) return x;
  return AttachLossGradient::apply(x, loss, scale);
}

}  // namespace foldtron
