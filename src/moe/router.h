// The MoE router: a linear gate over this rank's tokens, expert selection, token dropping, and
// the load-balancing losses (Megatron-Core's TopKRouter, written from its description).
//
// Scores ([n, E] per token over all experts):
//   softmax, pre-softmax   p = softmax(logits); select top-k of p (+ bias); weights = p at the k,
//                          renormalized to sum to 1 when normalize_topk (Mixtral, Qwen2-MoE)
//   softmax, post-softmax  select top-k of logits (+ bias); weights = softmax over those k
//   sigmoid                p = sigmoid(logits); select top-k of p (+ bias); weights = p at the k,
//                          normalized to sum 1 when normalize_topk (DeepSeek-V3)
// then multiplied by router_scaling_factor. The expert bias (aux-loss-free balancing) only changes
// which experts are selected, never the weights. Group-limited routing first keeps the
// router_group_topk groups whose best (topk / group_topk) selection scores sum highest.
//
// Capacity (capacity_factor > 0): every expert keeps at most
//   capacity = ceil(n * topk / E * capacity_factor)
// of this rank's own n tokens of the micro-batch (n = s/(tp*cp) * b: the tokens this rank routes,
// before any dispatch), choosing by routing weight (drop_policy probs) or earliest position
// (drop_policy position); the others are dropped for that expert (weight 0, residual only).
// With pad_to_capacity every expert gets exactly `capacity` slots from this rank (fixed shapes).
//
// Losses (each rank returns its local share; the shares sum over tp_cp to the loss of the whole
// micro-batch, and counts are all-reduced over tp_cp, so every layout gives the same value):
//   aux_loss      E * coeff / (k * T^2) * sum_e P_e * f_e, P_e = sum of p over tokens, f_e = tokens
//                 routed to e (before dropping), T = tokens of the micro-batch (over tp_cp)
//   seq_aux_loss  the same per sequence, averaged over the b sequences
//   z_loss        coeff * mean over the T tokens of logsumexp(logits)^2
#pragma once

#include <vector>

#include <torch/nn/module.h>

#include "config/config.h"
#include "layers/context.h"

namespace foldtron {

struct RouterLosses {
  torch::Tensor load_balancing;  // scalar, this rank's share (coefficient applied), or undefined
  torch::Tensor z_loss;          // scalar, this rank's share, or undefined
};

struct Routing {
  torch::Tensor probs;        // [n, E] routing weights of the kept choices, 0 elsewhere (differentiable)
  torch::Tensor routing_map;  // [n, E] bool: kept choices
  torch::Tensor slots;        // [E, capacity] int64 token of each slot (pad_to_capacity only)
  torch::Tensor slot_valid;   // [E, capacity] bool: the slot holds a kept choice (else padding)
  int64_t capacity = -1;      // -1: dropless
  int64_t copies_per_token = 0;  // dropless and no padding: every token has this many copies (topk); else 0
  RouterLosses losses;        // this forward's (training only)
};

class Router : public torch::nn::Module {
 public:
  Router(const LayerContext& ctx, const std::string& name, int64_t hidden, const MoEConfig& moe, double init_std);

  // x [n, h] this rank's tokens; sequence [n] int64: which of the micro-batch's `batch` sequences
  // each token belongs to (for seq_aux_loss); token_mask [n] bool (undefined: all tokens): the
  // others (padding) are not routed and not counted in the losses. Collective over tp_cp (token
  // counts).
  Routing forward(const torch::Tensor& x, const torch::Tensor& sequence, int64_t batch,
                  const torch::Tensor& token_mask = {});
  // Expert-bias update after an optimizer step: bias += rate * sign(mean - count) with the counts
  // routed since the last update summed over tp x dp x cp. Collective over tp_dp_cp.
  void update_expert_bias();

  torch::Tensor weight;       // [E, h] replicated
  torch::Tensor expert_bias;  // [E] fp32 buffer (expert_bias only)
  torch::Tensor pending_counts;  // [E] int64 buffer: tokens routed since the last bias update

 private:
  torch::ScalarType score_dtype(const torch::Tensor& x) const;
  // The load-balancing and z-losses of `logits` [n, E] routed as `routing_map` (this rank's
  // shares; `real` [n, 1]: the tokens that are not padding, undefined for all). Collective over
  // tp_cp.
  RouterLosses losses_of(const torch::Tensor& logits, const torch::Tensor& routing_map, const torch::Tensor& sequence,
                         int64_t batch, const torch::Tensor& real) const;

  LayerContext ctx_;
  MoEConfig moe_;
};

// The hand-checkable pieces, exposed for tests.
// Expert capacity for n tokens (see the header comment).
int64_t expert_capacity(int64_t tokens, int64_t topk, int64_t num_experts, double capacity_factor);
// Top-k selection and weights from router logits [n, E] (no dropping): (weights [n, k], experts [n, k]).
std::pair<torch::Tensor, torch::Tensor> select_experts(const torch::Tensor& logits, const MoEConfig& moe,
                                                       const torch::Tensor& expert_bias);
// Dropping: keeps at most `capacity` choices per expert of probs/routing_map [n, E]; fills
// slots/slot_valid when `pad`.
void apply_capacity(Routing& routing, int64_t capacity, DropPolicy policy, bool pad);
// Sinkhorn-normalized logits (Megatron's sinkhorn load balancing), used only to select.
torch::Tensor sinkhorn(const torch::Tensor& logits, double tolerance = 1e-4);

}  // namespace foldtron
