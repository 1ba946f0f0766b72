// Routed experts (see experts.h).
#include "moe/experts.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include "core/torch_compat.h"
#include "layers/recompute.h"

namespace foldtron {
namespace {

ParamInfo expert_info(const ExpertShard& shard, int64_t dim, int64_t parts) {
  ParamInfo info;
  info.tp_split_dim = dim;
  info.split_parts = parts;
  info.split_rank = shard.etp_rank;
  info.split_size = shard.etp_size;
  info.expert = true;
  info.expert_begin = shard.first_expert;
  return info;
}

// silu(gate) * up of a [c, 2F/etp] gate|up product.
torch::Tensor swiglu(const torch::Tensor& gate_up) {
  const auto halves = gate_up.chunk(2, -1);
  return torch::silu(halves[0]) * halves[1];
}

}  // namespace

ParamInfo gate_up_info(const ExpertShard& shard) { return expert_info(shard, 1, 2); }
ParamInfo down_info(const ExpertShard& shard) { return expert_info(shard, 2, 1); }

ExpertInit expert_init(const LayerContext& ctx, const std::string& name, int64_t e, int64_t hidden, int64_t ffn,
                       double init_std) {
  const std::string prefix = fmt::format("{}.experts.{}", name, e);
  return {full_normal(ctx, prefix + ".gate_proj.weight", {ffn, hidden}, init_std),
          full_normal(ctx, prefix + ".up_proj.weight", {ffn, hidden}, init_std),
          full_normal(ctx, prefix + ".down_proj.weight", {hidden, ffn}, init_std)};
}

GroupedExperts::GroupedExperts(const LayerContext& ctx, const std::string& name, const ExpertShard& shard,
                               int64_t hidden, int64_t ffn, double init_std) {
  std::vector<torch::Tensor> gate_up, down;
  const ParamInfo gu_info = gate_up_info(shard), d_info = down_info(shard);
  for (int64_t e = 0; e < shard.local_experts; ++e) {
    const ExpertInit w = expert_init(ctx, name, shard.first_expert + e, hidden, ffn, init_std);
    gate_up.push_back(shard_of(torch::cat({w.gate, w.up}, 0).unsqueeze(0), gu_info));  // [1, 2F/etp, h]
    down.push_back(shard_of(w.down.unsqueeze(0), d_info));                             // [1, h, F/etp]
  }
  gate_up_proj = register_parameter("gate_up_proj", make_param(ctx, torch::cat(gate_up, 0), gu_info));
  down_proj = register_parameter("down_proj", make_param(ctx, torch::cat(down, 0), d_info));
}

torch::Tensor GroupedExperts::forward(const torch::Tensor& x, const std::vector<int64_t>& counts) {
#if FOLDTRON_TORCH_AT_LEAST(2, 8)
  if (x.is_cuda() && x.scalar_type() == torch::kBFloat16 && x.size(0) > 0) {
    // One grouped GEMM per projection; offsets are the cumulative row ends of the experts.
    std::vector<int32_t> ends;
    int64_t end = 0;
    for (int64_t c : counts) ends.push_back(static_cast<int32_t>(end += c));
    const torch::Tensor offs = torch::tensor(ends, torch::kInt).to(x.device(), /*non_blocking=*/true);
    const torch::Tensor gate_up = at::_grouped_mm(x, gate_up_proj.transpose(1, 2), offs);  // [R, 2F/etp]
    const CheckpointFn act_down = [this, offs](const std::vector<torch::Tensor>& in) -> std::vector<torch::Tensor> {
      return {at::_grouped_mm(swiglu(in[0]), down_proj.transpose(1, 2), offs)};  // [R, h]
    };
    return (recompute_act && is_training() ? checkpoint(act_down, {gate_up}, nullptr) : act_down({gate_up}))[0];
  }
#endif
  // Experts without tokens still run (on zero rows): every rank's autograd graph must reach the
  // dispatcher's collectives, whatever the counts.
  std::vector<torch::Tensor> gate_up;  // [c, 2F/etp] per expert
  int64_t offset = 0;
  for (size_t e = 0; e < counts.size(); ++e) {
    gate_up.push_back(torch::matmul(x.narrow(0, offset, counts[e]), gate_up_proj[static_cast<int64_t>(e)].t()));
    offset += counts[e];
  }
  const CheckpointFn act_down = [this](const std::vector<torch::Tensor>& in) -> std::vector<torch::Tensor> {
    std::vector<torch::Tensor> outputs;
    for (size_t e = 0; e < in.size(); ++e) {
      outputs.push_back(torch::matmul(swiglu(in[e]), down_proj[static_cast<int64_t>(e)].t()));  // [c, h]
    }
    return {torch::cat(outputs, 0)};
  };
  return (recompute_act && is_training() ? checkpoint(act_down, gate_up, nullptr) : act_down(gate_up))[0];
}

SequentialExperts::SequentialExperts(const LayerContext& ctx, const std::string& name, const ExpertShard& shard,
                                     int64_t hidden, int64_t ffn, double init_std) {
  ParamInfo column = expert_info(shard, 0, 1), row = expert_info(shard, 1, 1);
  for (int64_t e = 0; e < shard.local_experts; ++e) {
    const int64_t global = shard.first_expert + e;
    const ExpertInit w = expert_init(ctx, name, global, hidden, ffn, init_std);
    column.expert_begin = row.expert_begin = global;
    auto expert = register_module(std::to_string(e), std::make_shared<torch::nn::Module>());  // experts.<e>.
    Weights weights;
    weights.gate = expert->register_parameter("gate_proj", make_param(ctx, shard_of(w.gate, column), column));
    weights.up = expert->register_parameter("up_proj", make_param(ctx, shard_of(w.up, column), column));
    weights.down = expert->register_parameter("down_proj", make_param(ctx, shard_of(w.down, row), row));
    experts.push_back(weights);
  }
}

torch::Tensor SequentialExperts::forward(const torch::Tensor& x, const std::vector<int64_t>& counts) {
  std::vector<torch::Tensor> outputs;
  int64_t offset = 0;
  for (size_t e = 0; e < counts.size(); ++e) {
    const torch::Tensor xe = x.narrow(0, offset, counts[e]);  // [c, h]
    const Weights& w = experts[e];
    const torch::Tensor h = torch::silu(torch::nn::functional::linear(xe, w.gate)) *
                            torch::nn::functional::linear(xe, w.up);  // [c, F/etp]
    outputs.push_back(torch::nn::functional::linear(h, w.down));      // [c, h]
    offset += counts[e];
  }
  return torch::cat(outputs, 0);
}

}  // namespace foldtron
