// The MoE layer: route -> dispatch -> experts -> combine, plus an optional shared expert.
//
//   x [s/tp, b, h] with sequence parallelism ([s, b, h] replicated over tp without it)
//   tokens [n, h]: this rank's own tokens (without SP, each tp rank takes its contiguous share
//                  of the s*b replicated tokens, and the outputs are gathered back)
//   routing = router(tokens, token_mask)          over all E experts; padding is not routed
//   dispatched = dispatcher.dispatch(tokens)      over etp_ep: the tokens of this rank's experts
//   y = dispatcher.combine(experts(dispatched))   [n, h]
//   out = y (+ shared_expert(x) * sigmoid(shared_expert_gate(x)))   same shape as x
//
// The routed experts live on the MoE grid (etp x ep x edp), the shared expert on the attention
// grid like a dense MLP (column/row parallel over tp). Names follow Hugging Face's in-memory
// Qwen2-MoE / Mixtral modules: gate, experts.{gate_up_proj,down_proj}, shared_expert.*,
// shared_expert_gate.
#pragma once

#include <memory>

#include <torch/nn/module.h>

#include "config/config.h"
#include "layers/mlp.h"
#include "layers/transformer_layer.h"
#include "moe/dispatcher.h"
#include "moe/experts.h"
#include "moe/router.h"

namespace foldtron {

class MoELayer : public FeedForward {
 public:
  MoELayer(const LayerContext& ctx, const std::string& name, const ModelConfig& model, const MoEConfig& moe);
  // Adds this forward's router losses to `state` (values; their gradient rides on the output).
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& token_mask, ForwardState& state) override;
  // Weight of this layer's router losses in the training loss: their gradient enters backward
  // through the layer's output (attach_loss_gradient), scaled by this (1 / micro-batches / dp).
  void set_router_loss_scale(double scale) { router_loss_scale_ = scale; }

  std::shared_ptr<Router> gate;
  std::shared_ptr<Experts> experts;
  std::shared_ptr<Mlp> shared_expert;                  // null without a shared expert
  torch::Tensor shared_expert_gate;     // shared_expert_gate.weight [1, h] replicated; undefined without

 private:
  LayerContext ctx_;
  ExpertShard shard_;
  std::unique_ptr<TokenDispatcher> dispatcher_;
  double router_loss_scale_ = 1.0;
};

}  // namespace foldtron
