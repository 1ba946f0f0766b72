// The MoE router (see router.h).
#include "moe/router.h"

#include <cmath>

#include <torch/torch.h>

#include "core/errors.h"
#include "layers/recompute.h"
#include "parallel/process_groups.h"

namespace foldtron {
namespace {

// Group-limited selection scores: experts outside the router_group_topk best groups get -inf.
torch::Tensor limit_to_groups(const torch::Tensor& scores, const MoEConfig& moe) {
  const int64_t n = scores.size(0), groups = moe.router_num_groups;
  const int64_t per_group_pick = std::max<int64_t>(moe.topk / moe.router_group_topk, 1);
  const torch::Tensor grouped = scores.reshape({n, groups, -1});                              // [n, G, E/G]
  const torch::Tensor group_scores = std::get<0>(grouped.topk(per_group_pick, -1)).sum(-1);  // [n, G]
  const torch::Tensor best = std::get<1>(group_scores.topk(moe.router_group_topk, -1));      // [n, gk]
  const torch::Tensor group_mask = torch::zeros({n, groups}, scores.options().dtype(torch::kBool)).scatter(1, best, true);
  const torch::Tensor mask = group_mask.unsqueeze(-1).expand_as(grouped).reshape_as(scores);  // [n, E]
  return scores.masked_fill(mask.logical_not(), -std::numeric_limits<double>::infinity());
}

}  // namespace

int64_t expert_capacity(int64_t tokens, int64_t topk, int64_t num_experts, double capacity_factor) {
  return static_cast<int64_t>(
      std::ceil(static_cast<double>(tokens * topk) / static_cast<double>(num_experts) * capacity_factor));
}

torch::Tensor sinkhorn(const torch::Tensor& logits, double tolerance) {
  torch::NoGradGuard no_grad;
  const torch::Tensor cost = logits.exp();  // [n, E]
  torch::Tensor d0 = torch::ones({cost.size(0)}, cost.options());
  torch::Tensor d1 = torch::ones({cost.size(1)}, cost.options());
  const double eps = 1e-8;
  for (int iteration = 0; iteration < 1000; ++iteration) {
    d0 = 1.0 / static_cast<double>(d0.size(0)) / ((d1 * cost).sum(1) + eps);
    const torch::Tensor next = 1.0 / static_cast<double>(d1.size(0)) / ((d0.unsqueeze(1) * cost).sum(0) + eps);
    const double error = (next - d1).abs().mean().item<double>();
    d1 = next;
    if (error <= tolerance) break;
  }
  return d1 * cost * d0.unsqueeze(1);
}

std::pair<torch::Tensor, torch::Tensor> select_experts(const torch::Tensor& logits, const MoEConfig& moe,
                                                       const torch::Tensor& expert_bias) {
  const int64_t k = moe.topk;
  auto biased = [&](const torch::Tensor& scores) {
    torch::Tensor selection = expert_bias.defined() ? scores + expert_bias.to(scores.scalar_type()) : scores;
    return moe.router_num_groups > 0 ? limit_to_groups(selection, moe) : selection;
  };
  torch::Tensor weights, experts;  // [n, k]
  if (moe.load_balancing == LoadBalancing::kSinkhorn) {
    experts = std::get<1>(sinkhorn(logits.detach()).topk(k, -1));
    weights = (k == 1 ? torch::sigmoid(logits) : torch::softmax(logits, -1)).gather(1, experts);
  } else if (moe.router_score == RouterScore::kSigmoid) {
    const torch::Tensor scores = torch::sigmoid(logits);
    experts = std::get<1>(biased(scores.detach()).topk(k, -1));
    weights = scores.gather(1, experts);
    if (k > 1 && moe.normalize_topk) weights = weights / (weights.sum(-1, true) + 1e-20);
  } else if (moe.router_pre_softmax) {
    const torch::Tensor scores = torch::softmax(logits, -1);
    experts = std::get<1>(biased(scores.detach()).topk(k, -1));
    weights = scores.gather(1, experts);
    if (moe.normalize_topk) weights = weights / weights.sum(-1, true);
  } else {
    experts = std::get<1>(biased(logits.detach()).topk(k, -1));
    weights = torch::softmax(logits.gather(1, experts), -1);
  }
  return {weights * moe.router_scaling_factor, experts};
}

void apply_capacity(Routing& routing, int64_t capacity, DropPolicy policy, bool pad) {
  routing.capacity = capacity;
  const int64_t n = routing.probs.size(0), num_experts = routing.probs.size(1);
  const int64_t picked = std::min(capacity, n);
  // Selection key per (expert, token): routed choices rank by weight or by earliness; the rest
  // rank below every routed choice.
  torch::Tensor key;  // [E, n]
  {
    torch::NoGradGuard no_grad;
    const torch::Tensor routed = routing.routing_map.t();
    if (policy == DropPolicy::kProbs) {
      key = routing.probs.detach().t().to(torch::kDouble).masked_fill(routed.logical_not(), -1.0);
    } else {
      const torch::Tensor earliness = torch::arange(n, 0, -1, routing.probs.options().dtype(torch::kDouble));  // n..1
      key = earliness.unsqueeze(0).expand({num_experts, n}).masked_fill(routed.logical_not(), -1.0);
    }
  }
  const auto top = key.topk(picked, 1);  // [E, picked]
  const torch::Tensor chosen = std::get<1>(top);
  const torch::Tensor chosen_valid = std::get<0>(top) >= 0;
  const torch::Tensor kept =
      torch::zeros({num_experts, n}, chosen_valid.options()).scatter(1, chosen, chosen_valid).t();  // [n, E]
  routing.routing_map = routing.routing_map.logical_and(kept);
  routing.probs = routing.probs * routing.routing_map.to(routing.probs.scalar_type());
  if (!pad) return;
  // Fixed shapes: `capacity` slots per expert; slots beyond this rank's n tokens are padding.
  routing.slots = chosen;
  routing.slot_valid = chosen_valid;
  if (capacity > picked) {
    const int64_t extra = capacity - picked;
    routing.slots = torch::cat({chosen, torch::zeros({num_experts, extra}, chosen.options())}, 1);
    routing.slot_valid = torch::cat({chosen_valid, torch::zeros({num_experts, extra}, chosen_valid.options())}, 1);
  }
}

Router::Router(const LayerContext& ctx, const std::string& name, int64_t hidden, const MoEConfig& moe,
               double init_std)
    : ctx_(ctx), moe_(moe) {
  FT_CHECK(ctx.groups != nullptr, "the MoE router needs the process groups");
  // Every tp rank routes different tokens: the gate's gradient is summed over tp.
  weight = register_parameter(
      "weight", replicated_param(ctx, full_normal(ctx, name + ".weight", {moe.num_experts, hidden}, init_std),
                                 ctx.tp_size() > 1));
  if (moe.expert_bias) {
    expert_bias = register_buffer("expert_bias", torch::zeros({moe.num_experts}, torch::TensorOptions().device(ctx.device)));
  }
  pending_counts = register_buffer("pending_counts",
                                   torch::zeros({moe.num_experts}, torch::TensorOptions().dtype(torch::kLong).device(ctx.device)));
}

torch::ScalarType Router::score_dtype(const torch::Tensor& x) const {
  if (moe_.router_fp64) return torch::kDouble;
  if (moe_.router_fp32) return torch::kFloat;
  return x.scalar_type();
}

Routing Router::forward(const torch::Tensor& x, const torch::Tensor& sequence, int64_t batch,
                        const torch::Tensor& token_mask) {
  const int64_t n = x.size(0), num_experts = moe_.num_experts, k = moe_.topk;
  const torch::ScalarType dtype = score_dtype(x);
  const torch::Tensor logits = torch::nn::functional::linear(x.to(dtype), weight.to(dtype));  // [n, E]
  auto [weights, experts] = select_experts(logits, moe_, expert_bias);                        // [n, k]

  Routing routing;
  routing.routing_map = torch::zeros({n, num_experts}, x.options().dtype(torch::kBool)).scatter(1, experts, true);
  routing.probs = torch::zeros({n, num_experts}, logits.options()).scatter(1, experts, weights);
  // Padding: no copies, no weight, not counted.
  const torch::Tensor real =
      token_mask.defined() ? token_mask.to(x.device()).to(torch::kBool).reshape({n, 1}) : torch::Tensor();  // [n, 1]
  if (real.defined()) {
    routing.routing_map = routing.routing_map.logical_and(real);
    routing.probs = routing.probs * real.to(routing.probs.scalar_type());
  }
  routing.copies_per_token = !real.defined() && moe_.capacity_factor <= 0 ? k : 0;
  // A recomputed forward (activation recomputation) routes the same tokens again: not counted twice.
  if (is_training() && moe_.expert_bias && !recomputing()) pending_counts += routing.routing_map.sum(0);
  if (is_training()) routing.losses = losses_of(logits, routing.routing_map, sequence, batch, real);
  if (moe_.capacity_factor > 0) {
    apply_capacity(routing, expert_capacity(n, k, num_experts, moe_.capacity_factor), moe_.drop_policy,
                   moe_.pad_to_capacity);
  }
  return routing;
}

RouterLosses Router::losses_of(const torch::Tensor& logits, const torch::Tensor& routing_map,
                               const torch::Tensor& sequence, int64_t batch, const torch::Tensor& real) const {
  const int64_t n = logits.size(0), num_experts = moe_.num_experts, k = moe_.topk;
  const bool lb = moe_.aux_loss_coeff > 0 &&
                  (moe_.load_balancing == LoadBalancing::kAuxLoss || moe_.load_balancing == LoadBalancing::kSeqAuxLoss);
  const bool z = moe_.z_loss_coeff > 0;
  RouterLosses losses;
  if (!lb && !z) return losses;
  const bool masked = real.defined();
  // Statistics of the whole micro-batch over tp_cp, before dropping: one all-reduce carries the
  // per-(sequence, expert) counts and the per-sequence token counts, [b * E + b].
  Communicator& tp_cp = ctx_.groups->tp_cp();
  torch::Tensor stats;
  {
    torch::NoGradGuard no_grad;
    const torch::Tensor per_seq =
        torch::zeros({batch, num_experts}, logits.options()).index_add(0, sequence, routing_map.to(logits.scalar_type()));
    const torch::Tensor ones = masked ? real.reshape({n}).to(logits.scalar_type()) : torch::ones({n}, logits.options());
    const torch::Tensor seq_tokens = torch::zeros({batch}, logits.options()).index_add(0, sequence, ones);
    stats = torch::cat({per_seq.reshape({-1}), seq_tokens});
    tp_cp.all_reduce(stats);
  }
  const torch::Tensor counts = stats.narrow(0, 0, batch * num_experts).reshape({batch, num_experts});  // [b, E]
  const torch::Tensor seq_tokens = stats.narrow(0, batch * num_experts, batch);                        // [b]
  // The token total T: without padding a shape, summed on the host (the device never waits
  // here); with padding the count of tokens, on the device (1/T as `per_t`). Every rank gathers
  // the shapes, padded or not, so the group's collectives stay in step.
  double total = 0;
  for (const auto& r : tp_cp.all_gather_ints({n})) total += static_cast<double>(r[0]);
  if (total == 0) return losses;
  const torch::Tensor per_t = masked ? 1.0 / seq_tokens.sum().clamp_min(1) : torch::Tensor();
  // Rows of padding contribute nothing.
  const auto real_rows = [&](const torch::Tensor& rows) { return masked ? rows * real.to(rows.scalar_type()) : rows; };
  if (lb) {
    // Probabilities over all experts, as the losses see them.
    torch::Tensor p = moe_.router_score == RouterScore::kSigmoid ? torch::sigmoid(logits) : torch::softmax(logits, -1);
    if (moe_.router_score == RouterScore::kSigmoid) p = p / (p.sum(-1, true) + 1e-20);
    const double coeff = static_cast<double>(num_experts) * moe_.aux_loss_coeff / static_cast<double>(k);
    if (moe_.load_balancing == LoadBalancing::kAuxLoss) {
      const torch::Tensor terms = (real_rows(p).sum(0) * counts.sum(0)).sum();
      losses.load_balancing = masked ? terms * coeff * per_t * per_t : terms * (coeff / (total * total));
    } else {
      // Per sequence b: E/(k*S_b^2) * sum_e P_be * f_be, averaged over the b sequences.
      const torch::Tensor p_seq =
          torch::zeros({batch, num_experts}, p.options()).index_add(0, sequence, real_rows(p));  // [b, E]
      const torch::Tensor s2 = seq_tokens.clamp_min(1).pow(2).unsqueeze(1);
      losses.load_balancing = (p_seq * counts / s2).sum() * (coeff / static_cast<double>(batch));
    }
  }
  if (z) {
    const torch::Tensor terms = real_rows(torch::logsumexp(logits, -1).pow(2).unsqueeze(1)).sum();
    losses.z_loss = masked ? terms * moe_.z_loss_coeff * per_t : terms * (moe_.z_loss_coeff / total);
  }
  return losses;
}

void Router::update_expert_bias() {
  if (!moe_.expert_bias) return;
  torch::NoGradGuard no_grad;
  torch::Tensor counts = pending_counts.clone();
  ctx_.groups->get(GroupKind::kTpDpCp).all_reduce(counts);  // the whole global batch of this stage
  const torch::Tensor f = counts.to(torch::kFloat);
  expert_bias += moe_.expert_bias_update_rate * torch::sign(f.mean() - f);
  pending_counts.zero_();
}

}  // namespace foldtron
