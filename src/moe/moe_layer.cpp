// The MoE layer (see moe_layer.h).
#include "moe/moe_layer.h"

#include <torch/torch.h>

#include "core/errors.h"
#include "layers/recompute.h"
#include "parallel/mappings.h"
#include "parallel/process_groups.h"

namespace foldtron {

MoELayer::MoELayer(const LayerContext& ctx, const std::string& name, const ModelConfig& model, const MoEConfig& moe)
    : ctx_(ctx) {
  FT_CHECK(ctx.groups != nullptr, "the MoE layer needs the process groups");
  const ProcessGroups& groups = *ctx.groups;
  shard_.local_experts = moe.num_experts / groups.ep().size();
  shard_.first_expert = groups.coords().ep * shard_.local_experts;
  shard_.num_experts = moe.num_experts;
  shard_.etp_rank = groups.etp().rank();
  shard_.etp_size = groups.etp().size();
  const int64_t ffn = moe.expert_ffn(model.ffn_hidden_size);

  gate = register_module("gate", std::make_shared<Router>(ctx, name + ".gate", model.hidden_size, moe, model.init_std));
  if (moe.grouped_experts) {
    experts = register_module(
        "experts", std::make_shared<GroupedExperts>(ctx, name, shard_, model.hidden_size, ffn, model.init_std));
  } else {
    experts = register_module(
        "experts", std::make_shared<SequentialExperts>(ctx, name, shard_, model.hidden_size, ffn, model.init_std));
  }
  if (moe.shared_expert_ffn_hidden_size > 0) {
    shared_expert = register_module(
        "shared_expert", std::make_shared<Mlp>(ctx, name + ".shared_expert", model.hidden_size,
                                               moe.shared_expert_ffn_hidden_size, Activation::kSwiglu, false,
                                               model.init_std));
    if (moe.shared_expert_gate) {
      // One output, so replicated; with SP each tp rank gates its own tokens (gradient summed over tp).
      auto module = register_module("shared_expert_gate", std::make_shared<torch::nn::Module>());
      shared_expert_gate = module->register_parameter(
          "weight", replicated_param(ctx, full_normal(ctx, name + ".shared_expert_gate.weight", {1, model.hidden_size},
                                                      model.init_std),
                                     ctx.sequence_parallel));
    }
  }
  dispatcher_ = make_dispatcher(moe.dispatcher, *ctx.groups, shard_);
  experts->recompute_act = model.recompute_moe_act();
}

torch::Tensor MoELayer::forward(const torch::Tensor& x, const torch::Tensor& token_mask, ForwardState& state) {
  const int64_t h = x.size(2), batch = x.size(1);
  Communicator& tp = *ctx_.tp;
  torch::Tensor tokens = x.reshape({-1, h});  // [s/tp * b, h] (SP) or [s * b, h]
  torch::Tensor mask = token_mask.defined() ? token_mask.reshape({-1}) : token_mask;  // the same rows
  int64_t first_row = ctx_.sp() ? tp.rank() * tokens.size(0) : 0;
  std::vector<int64_t> tp_rows;
  if (!ctx_.sp() && tp.size() > 1) {
    // Replicated over tp: each tp rank routes its contiguous share of the rows.
    const int64_t rows = tokens.size(0), size = tp.size();
    for (int64_t r = 0; r < size; ++r) tp_rows.push_back(rows / size + (r < rows % size ? 1 : 0));
    first_row = rows_before(tp_rows, tp.rank());
    tokens = split_rows(tokens, tp, tp_rows);  // [n, h]
    if (mask.defined()) mask = mask.narrow(0, first_row, tokens.size(0));
  }
  const int64_t n = tokens.size(0);
  // Rows are (position, sequence) with the sequence fastest: row r belongs to sequence r % b.
  const torch::Tensor sequence =
      torch::arange(first_row, first_row + n, torch::TensorOptions().dtype(torch::kLong).device(x.device()))
          .remainder(std::max<int64_t>(batch, 1));
  const Routing routing = gate->forward(tokens, sequence, batch, mask);
  const Dispatched dispatched = dispatcher_->dispatch(tokens, routing);
  torch::Tensor y = dispatcher_->combine(experts->forward(dispatched.tokens, dispatched.counts), dispatched);  // [n, h]
  if (!tp_rows.empty()) y = gather_rows(y, tp, tp_rows, /*reduce_grad=*/false);  // consumers are replicated
  y = y.reshape(x.sizes());
  if (shared_expert) {
    torch::Tensor shared = shared_expert->forward(x);  // same shape as x
    if (shared_expert_gate.defined()) {
      shared = shared * torch::sigmoid(torch::nn::functional::linear(x, shared_expert_gate));  // x [.., h] -> [.., 1]
    }
    y = y + shared;
  }
  // The router losses' gradient rides on the output (so it survives recomputation and pipelining).
  const RouterLosses& losses = routing.losses;
  state.add_router_losses(losses.load_balancing, losses.z_loss);
  torch::Tensor router_loss = losses.load_balancing;
  if (losses.z_loss.defined()) router_loss = router_loss.defined() ? router_loss + losses.z_loss : losses.z_loss;
  return attach_loss_gradient(y, router_loss, router_loss_scale_);
}

}  // namespace foldtron
