// The layout planner's cost model (see plan.h).
#include "training/plan.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include <fmt/format.h>

#include "config/validate.h"
#include "core/errors.h"
#include "training/flops.h"

namespace foldtron {

namespace {

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;
constexpr double kBf16 = 2.0;

// ---- kernel times from the profile ----

// Measured time of the nearest measured shape among the rows `keep` accepts (distance in log
// space over the sizes), scaled by the work ratio. `sizes(row)` lists the same dimensions as `want`.
template <typename Row, typename Keep, typename Sizes, typename Work>
double nearest_ms(const std::vector<Row>& rows, Keep keep, const std::vector<double>& want, Sizes sizes, Work work,
                  const char* what) {
  const Row* best = nullptr;
  double best_distance = std::numeric_limits<double>::infinity();
  for (const Row& row : rows) {
    if (!keep(row)) continue;
    const std::vector<double> have = sizes(row);
    double distance = 0;
    for (size_t i = 0; i < want.size(); ++i) distance += std::pow(std::log(want[i] / have[i]), 2);
    if (distance < best_distance) best_distance = distance, best = &row;
  }
  if (best == nullptr) {
    throw UsageError(fmt::format("the hardware profile has no {} rates", what), "re-run bench/calibrate_planner.py");
  }
  return best->ms * work(want) / work(sizes(*best));
}

template <typename Row>
auto pass_is(const std::string& pass) {
  return [pass](const Row& row) { return row.pass == pass; };
}

double gemm_ms(const HardwareProfile& profile, const std::string& pass, double m, double n, double k) {
  if (m <= 0 || n <= 0 || k <= 0) return 0;
  return nearest_ms(
      profile.gemm, pass_is<HardwareProfile::Gemm>(pass), {m, n, k},
      [](const HardwareProfile::Gemm& g) { return std::vector<double>{g.m, g.n, g.k}; },
      [](const std::vector<double>& s) { return s[0] * s[1] * s[2]; }, ("GEMM " + pass).c_str());
}

// Forward, input gradient and weight gradient (first micro-batch or accumulating) of y = x W^T.
struct Passes {
  double forward = 0, backward = 0, backward_first = 0;
  Passes& operator+=(const Passes& o) {
    forward += o.forward, backward += o.backward, backward_first += o.backward_first;
    return *this;
  }
};

Passes linear(const HardwareProfile& profile, double m, double n, double k) {
  const double dgrad = gemm_ms(profile, "dgrad", m, n, k);
  return {gemm_ms(profile, "forward", m, n, k), dgrad + gemm_ms(profile, "wgrad", m, n, k),
          dgrad + gemm_ms(profile, "wgrad_first", m, n, k)};
}

Passes experts(const HardwareProfile& profile, double local_experts, double rows, double hidden, double ffn) {
  if (rows <= 0 || local_experts <= 0) return {};  // no experts (a dense model)
  const auto ms = [&](const char* pass) {
    return nearest_ms(
        profile.grouped, pass_is<HardwareProfile::Grouped>(pass), {local_experts, rows / local_experts, hidden, ffn},
        [](const HardwareProfile::Grouped& g) { return std::vector<double>{g.experts, g.rows_per_expert, g.hidden, g.ffn}; },
        [](const std::vector<double>& s) { return s[0] * s[1] * s[2] * s[3]; }, "grouped-expert");
  };
  const double dgrad = ms("dgrad");
  return {ms("forward"), dgrad + ms("wgrad"), dgrad + ms("wgrad_first")};
}

// Forward + backward of causal attention over `batch` sequences: work seq^2 * heads * head_dim.
double attention_ms(const std::vector<HardwareProfile::Attention>& rows, double batch, double seq, double heads,
                    double head_dim) {
  return batch * nearest_ms(
                     rows, [](const HardwareProfile::Attention&) { return true; }, {seq, heads, head_dim},
                     [](const HardwareProfile::Attention& a) { return std::vector<double>{a.seq, a.heads, a.head_dim}; },
                     [](const std::vector<double>& s) { return s[0] * s[0] * s[1] * s[2]; }, "attention");
}

// Microseconds of a two-rank NCCL call of `bytes` from a measured table (linear between sizes,
// proportional beyond the largest, the smallest's time below it).
double table_us(const std::vector<std::pair<double, double>>& table, double bytes) {
  if (bytes <= 0) return 0;
  if (bytes <= table.front().first) return table.front().second;
  for (size_t i = 1; i < table.size(); ++i) {
    if (bytes <= table[i].first) {
      const auto& [b0, t0] = table[i - 1];
      const auto& [b1, t1] = table[i];
      return t0 + (t1 - t0) * (bytes - b0) / (b1 - b0);
    }
  }
  return table.back().second * bytes / table.back().first;
}

enum class Collective { kAllGather, kReduceScatter, kAllReduce, kAllToAll, kSendRecv };

// Milliseconds of a collective over `ranks` ranks, `bytes` being the all-gather's output, the
// all-reduce's buffer or one rank's all-to-all send buffer. Scaled to the bus bytes of the
// measured two-rank calls (nccl-tests' bus-bandwidth factors); inter-node when the group spans
// nodes.
double collective_ms(const HardwareProfile& profile, Collective kind, double bytes, int64_t ranks, bool inter_node) {
  if (ranks <= 1 || bytes <= 0) return 0;
  const double n = static_cast<double>(ranks);
  double bus_bytes = 0;  // bytes over the slowest link
  switch (kind) {
    case Collective::kAllGather:
    case Collective::kReduceScatter: bus_bytes = bytes * (n - 1) / n; break;
    case Collective::kAllReduce: bus_bytes = 2 * bytes * (n - 1) / n; break;
    case Collective::kAllToAll: bus_bytes = bytes * (n - 1) / n; break;
    case Collective::kSendRecv: bus_bytes = bytes; break;
  }
  if (inter_node) return (profile.inter_node_latency_us + bus_bytes / (profile.inter_node_gbps * 1e3)) / 1e3;
  // Two-rank tables: an all-reduce of B moves B bus bytes, an all-to-all of B moves B/2.
  if (kind == Collective::kAllToAll || kind == Collective::kSendRecv) {
    return table_us(profile.all_to_all_us, 2 * bus_bytes) / 1e3;
  }
  return table_us(profile.all_reduce_us, bus_bytes) / 1e3;
}

// ---- the model's sizes ----

struct Shape {
  double h = 0, q = 0, kv = 0, heads = 0, groups = 0, head_dim = 0, ffn = 0, moe_ffn = 0, shared = 0;
  double experts = 0, topk = 0, vocab = 0, mats = 3;  // weight matrices per MLP: 3 gated, 2 plain
  double layers = 0, moe_layers = 0;
  bool tied = false;
};

Shape shape_of(const Config& config) {
  const ModelConfig& m = config.model;
  Shape s;
  s.h = static_cast<double>(m.hidden_size);
  s.head_dim = static_cast<double>(m.kv_channels());
  s.heads = static_cast<double>(m.num_attention_heads);
  s.groups = static_cast<double>(m.num_query_groups);
  s.q = s.heads * s.head_dim;
  s.kv = s.groups * s.head_dim;
  s.ffn = static_cast<double>(m.ffn_hidden_size);
  s.moe_ffn = static_cast<double>(config.moe.expert_ffn(m.ffn_hidden_size));
  s.shared = static_cast<double>(config.moe.shared_expert_ffn_hidden_size);
  s.experts = static_cast<double>(config.moe.num_experts);
  s.topk = static_cast<double>(config.moe.topk);
  s.vocab = static_cast<double>(m.vocab_size);
  s.mats = m.gated_mlp() ? 3.0 : 2.0;
  s.layers = static_cast<double>(m.num_layers);
  s.moe_layers = static_cast<double>(num_moe_layers(config));
  s.tied = m.tie_embeddings;
  return s;
}

// Parameters one rank holds, split into those the dense data-parallel group and those the
// expert data-parallel group replicate.
struct RankParams {
  double dense = 0, expert = 0;
  double total() const { return dense + expert; }
};

RankParams rank_params(const Shape& s, const PlanLayout& l, bool first_stage, bool last_stage) {
  const double tp = static_cast<double>(l.tp), layers = s.layers / static_cast<double>(l.pp);
  const double moe_share = s.layers > 0 ? s.moe_layers / s.layers : 0;
  RankParams p;
  const double attention = (s.h * (s.q + 2 * s.kv) + s.q * s.h) / tp + 2 * s.h;
  const double dense_mlp = s.mats * s.h * s.ffn / tp;
  const double moe_dense = s.experts * s.h + s.mats * s.h * s.shared / tp;  // router and shared expert
  const double moe_experts = s.experts * s.mats * s.h * s.moe_ffn / static_cast<double>(l.ep * l.etp);
  p.dense = layers * (attention + (1 - moe_share) * dense_mlp + moe_share * moe_dense);
  p.expert = layers * moe_share * moe_experts;
  if (first_stage) p.dense += s.vocab * s.h / tp;
  if (last_stage && (!s.tied || l.pp > 1)) p.dense += s.vocab * s.h / tp + s.h;
  return p;
}

// Bytes per parameter of the states: bf16 weights, the gradient buffer (fp32 or bf16), fp32 main
// weights and the two moments (fp32 or bf16); the last two sharded by the distributed optimizer.
// (bf16 main gradients change the state's memory and traffic here; the weight-gradient GEMMs keep
// the calibrated fp32-accumulating rates, which the profile does not have for bf16.)
struct StateBytes {
  double weights = kBf16, grads = 4, main = 4, moments = 8;
};

StateBytes state_bytes(const Config& config) {
  StateBytes b;
  if (config.model.params_dtype == DType::kFloat32) b.weights = 4, b.main = 0;
  if (config.train.main_grads_dtype == DType::kBfloat16) b.grads = 2;  // bf16 parameters only (validated)
  if (config.train.adam_moments_dtype == DType::kBfloat16) b.moments = 4;
  return b;
}

// Parameters whose main weights and moments this rank keeps and updates: the distributed
// optimizer shards dense ones over dp*cp (their gradient-reduction group) and experts over edp.
double optimizer_params(const RankParams& p, const PlanLayout& l) {
  if (!l.distributed_optimizer) return p.total();
  return p.dense / static_cast<double>(l.dp * l.cp) + p.expert / static_cast<double>(l.edp);
}

// A group of `size` ranks `stride` apart in the default rank order (tp-cp-ep-dp-pp) spans
// nodes when stride*size exceeds a node.
bool spans_nodes(const HardwareProfile& hw, int64_t stride, int64_t size) { return stride * size > hw.gpus_per_node; }

double state_gib(const Config& config, const RankParams& p, const PlanLayout& l) {
  const StateBytes b = state_bytes(config);
  const double sharded = (b.main + b.moments) * optimizer_params(p, l);
  return ((b.weights + b.grads) * p.total() + sharded) / kGiB;
}

}  // namespace

PlanLayout plan_layout_of(const Config& config, int64_t gpus) {
  const ParallelConfig& p = config.parallel;
  PlanLayout l;
  l.tp = p.tp, l.cp = p.cp, l.pp = p.pp, l.vpp = p.vpp, l.ep = p.ep, l.etp = p.expert_tp();
  l.dp = gpus / (l.tp * l.cp * l.pp), l.edp = gpus / (l.etp * l.ep * l.pp);
  l.micro_batch = config.train.micro_batch_size, l.recompute = config.model.recompute;
  l.distributed_optimizer = p.distributed_optimizer, l.sequence_parallel = p.sequence_parallel;
  return l;
}

std::string describe_layout(const PlanLayout& l) {
  std::string text = fmt::format("tp{} cp{} pp{}", l.tp, l.cp, l.pp);
  if (l.vpp > 1) text += fmt::format(" vpp{}", l.vpp);
  text += fmt::format(" ep{} etp{} dp{} mb{}", l.ep, l.etp, l.dp, l.micro_batch);
  if (l.sequence_parallel) text += " sp";
  if (l.recompute != Recompute::kNone) text += " " + enum_name(l.recompute);
  if (l.distributed_optimizer) text += " distopt";
  return text;
}

Config config_for_layout(const Config& base, const PlanLayout& l) {
  Config config = base;
  ParallelConfig& p = config.parallel;
  p.tp = l.tp, p.cp = l.cp, p.pp = l.pp, p.vpp = l.vpp, p.ep = l.ep, p.etp = l.etp;
  p.sequence_parallel = l.sequence_parallel;
  p.distributed_optimizer = l.distributed_optimizer;
  config.train.micro_batch_size = l.micro_batch;
  config.model.recompute = l.recompute;
  return config;
}

namespace {

// One rank's share of a micro-batch under a layout (sizes as doubles for the arithmetic).
struct Share {
  Shape s;
  double b = 0, seq = 0, tp = 1, cp = 1, pp = 1, sp = 1;
  double micro_batches = 1, layers = 0, moe_share = 0;
  double tokens = 0;         // b*s/cp: the attention grid's tokens (gathered over sp for GEMMs)
  double rows = 0;           // expert rows: tokens/sp routed topk times, gathered over etp
  double local_experts = 0;  // E/ep
  double expert_ffn = 0;     // F/etp
  bool full = false, core_attn = false, moe_act = false;
};

Share share_of(const Config& config, const PlanLayout& l) {
  const Config resolved = config_for_layout(config, l);
  Share d;
  d.s = shape_of(config);
  d.b = static_cast<double>(l.micro_batch), d.seq = static_cast<double>(config.train.seq_length);
  d.tp = static_cast<double>(l.tp), d.cp = static_cast<double>(l.cp), d.pp = static_cast<double>(l.pp);
  d.sp = l.sequence_parallel ? d.tp : 1.0;
  d.micro_batches = static_cast<double>(config.train.global_batch_size) / (d.b * static_cast<double>(l.dp));
  d.layers = d.s.layers / d.pp;
  d.moe_share = d.s.layers > 0 ? d.s.moe_layers / d.s.layers : 0;
  d.tokens = d.b * d.seq / d.cp;
  d.rows = d.tokens / d.sp * d.s.topk * static_cast<double>(l.etp);
  d.local_experts = d.s.experts / static_cast<double>(l.ep);
  d.expert_ffn = d.s.moe_ffn / static_cast<double>(l.etp);
  d.full = l.recompute == Recompute::kFull;
  d.core_attn = resolved.model.recompute_core_attn();
  d.moe_act = resolved.model.recompute_moe_act();
  return d;
}

// Fills the memory fields: the first stage holds the most micro-batches in flight, the last the
// logits; the larger of the two.
void predict_memory(const Config& config, const Share& d, const PlanLayout& l, const HardwareProfile& hw,
                    const RankParams& first, const RankParams& last, PlanPrediction& out) {
  const Shape& s = d.s;
  const double in_flight = std::min(d.micro_batches, d.pp) *
                           (l.vpp > 1 ? 1.0 + (d.pp - 1) / (d.pp * static_cast<double>(l.vpp)) : 1.0);
  // bf16 elements each layer keeps per token: layer input, normed input (gathered), q/k/v and
  // the attention output; per expert row the permuted input, gate/up output, activation (unless
  // recomputed) and expert output; a dense or shared MLP's input, gate/up output and activation.
  const double attention = s.h / d.sp + s.h + (s.q + 2 * s.kv) / d.tp + s.q / d.tp;
  const double expert_row = s.h + 2 * d.expert_ffn + (d.moe_act ? 0 : d.expert_ffn) + s.h;
  const double shared = s.shared > 0 ? s.h + s.mats * s.shared / d.tp : 0;
  const double moe = s.h / d.sp + d.rows / d.tokens * expert_row + shared;
  const double dense = s.h + s.mats * s.ffn / d.tp;
  const double layer_bytes = d.tokens * (attention + d.moe_share * moe + (1 - d.moe_share) * dense) * kBf16;
  // With full recomputation each layer keeps its input, plus one layer's tensors while recomputed.
  const auto saved = [&](double flight) {
    return d.full ? d.layers * d.tokens * s.h / d.sp * kBf16 * flight + layer_bytes : d.layers * layer_bytes * flight;
  };
  const double logits = d.tokens * s.vocab / d.tp * kBf16;
  const double first_gib = state_gib(config, first, l) + (saved(in_flight) + (l.pp == 1 ? logits : 0)) / kGiB;
  const double last_gib = state_gib(config, last, l) + (saved(1) + logits) / kGiB;
  out.state_gib = state_gib(config, first_gib >= last_gib ? first : last, l);
  out.memory_gib = std::max(first_gib, last_gib) + hw.workspace_gib;
  out.activation_gib = out.memory_gib - out.state_gib;
  out.fits = out.memory_gib <= hw.memory_gib * 0.97;
}

// Milliseconds of one micro-batch through the busiest stage, by part.
struct MicroBatchCost {
  double compute = 0, memory = 0, gaps = 0, comm = 0;
  double last_backward = 0;  // the last micro-batch's backward: what hides the gradient reduction
  double total() const { return compute + memory + gaps + comm; }
};

// Forward + backward of one layer's core attention for the layout's CP kind.
double core_attention_ms(const Config& config, const Share& d, const HardwareProfile& hw) {
  const double heads = d.s.heads / d.tp;
  const CpCommType kind = config.parallel.cp_comm_type;
  if (d.cp == 1 || kind == CpCommType::kAllToAll) {
    return attention_ms(hw.attention, d.b, d.seq, heads / d.cp, d.s.head_dim);
  }
  // All-gather and ring: the rank's 1/cp of the causal pairs, in pieces through the same fused
  // kernels, as long as seq/cp (bench/cp_attention on the H200: at the whole causal attention's
  // rate at 128K with cp 2, 92-93% at 32K): cp times a causal attention of seq/cp, at its rate.
  return d.cp * attention_ms(hw.attention, d.b, d.seq / d.cp, heads, d.s.head_dim);
}

// GEMMs, attention and recomputation of one micro-batch (sets compute and last_backward).
void compute_ms(const Config& config, const Share& d, const HardwareProfile& hw, MicroBatchCost& cost) {
  const Shape& s = d.s;
  Passes layer = linear(hw, d.tokens, (s.q + 2 * s.kv) / d.tp, s.h);  // qkv
  layer += linear(hw, d.tokens, s.h, s.q / d.tp);                     // output projection
  Passes mlp, dense;
  if (d.moe_share > 0) {
    mlp += experts(hw, d.local_experts, d.rows, s.h, d.expert_ffn);
    mlp += linear(hw, d.tokens / d.sp, s.experts, s.h);  // router
    if (s.shared > 0) {
      mlp += linear(hw, d.tokens, (s.mats - 1) * s.shared / d.tp, s.h);
      mlp += linear(hw, d.tokens, s.h, s.shared / d.tp);
    }
  }
  if (d.moe_share < 1) {
    dense += linear(hw, d.tokens, (s.mats - 1) * s.ffn / d.tp, s.h);
    dense += linear(hw, d.tokens, s.h, s.ffn / d.tp);
  }
  const double attention = core_attention_ms(config, d, hw), attention_forward = attention / 3.5;
  const auto mix = [&](double Passes::*pass) {
    return layer.*pass + d.moe_share * mlp.*pass + (1 - d.moe_share) * dense.*pass;
  };
  const double forward = mix(&Passes::forward) + attention_forward;
  const double backward_first = mix(&Passes::backward_first) + attention - attention_forward;
  const double backward = mix(&Passes::backward) + attention - attention_forward;
  double recompute = d.full ? forward : 0;
  if (!d.full) {
    recompute = (d.core_attn ? attention_forward : 0) +
                (d.moe_act ? d.moe_share * experts(hw, d.local_experts, d.rows, s.h, d.expert_ffn).forward / s.mats : 0);
  }
  const Passes head = linear(hw, d.tokens, s.vocab / d.tp, s.h);  // the last stage's output layer
  // The first micro-batch writes the fp32 weight gradients, the others accumulate into them.
  const double accumulating = d.micro_batches > 1 ? (d.micro_batches - 1) / d.micro_batches : 0;
  const double mean_backward = backward_first + accumulating * (backward - backward_first);
  const double head_backward = head.backward_first + accumulating * (head.backward - head.backward_first);
  cost.compute = d.layers * (forward + mean_backward + recompute) + head.forward + head_backward;
  cost.last_backward = d.layers * backward + head.backward;
}

// Collectives of one micro-batch the trainer does not overlap with compute. A group of `size`
// ranks `stride` apart in the rank order spans nodes when stride*size exceeds a node.
double communication_ms(const Config& config, const Share& d, const PlanLayout& l, const HardwareProfile& hw) {
  const Shape& s = d.s;
  const auto inter = [&](int64_t stride, int64_t size) { return spans_nodes(hw, stride, size); };
  const double passes = d.full ? 3.0 : 2.0;  // forward (again when recomputed) and backward
  double ms = 0;
  if (l.tp > 1) {  // sequence parallel: an all-gather before and a reduce-scatter after each split sublayer
    const double bytes = d.tokens * s.h * kBf16;
    const double sublayer = collective_ms(hw, Collective::kAllGather, bytes, l.tp, inter(1, l.tp)) +
                            collective_ms(hw, Collective::kReduceScatter, bytes, l.tp, inter(1, l.tp));
    const double split_mlps = d.moe_share * (l.etp > 1 ? 1.0 : 0.0) + (1 - d.moe_share);
    ms += d.layers * passes * sublayer * (1 + split_mlps);
  }
  if (l.ep > 1 && d.moe_share > 0) {  // dispatch and combine over the ep group
    const double bytes = d.tokens / d.sp * s.topk * s.h * kBf16;
    ms += d.layers * d.moe_share * 2 * passes * collective_ms(hw, Collective::kAllToAll, bytes, l.ep, inter(l.etp, l.ep));
  }
  if (l.cp > 1 && config.parallel.cp_comm_type == CpCommType::kAllToAll) {  // q, k, v in and the output back
    const double bytes = d.tokens * (2 * s.q + 2 * s.kv) / d.tp * kBf16;
    ms += d.layers * passes * collective_ms(hw, Collective::kAllToAll, bytes, l.cp, inter(l.tp, l.cp));
  } else if (l.cp > 1 && config.parallel.cp_comm_type == CpCommType::kAllGather) {  // keys and values
    const double bytes = d.b * d.seq * 2 * s.kv / d.tp * kBf16;
    ms += d.layers * passes * collective_ms(hw, Collective::kAllGather, bytes, l.cp, inter(l.tp, l.cp));
  }  // ring: the next block's exchange runs under the current block's compute
  if (l.pp > 1) {  // activations forward and their gradients back, once per model chunk
    const double bytes = d.tokens / d.sp * s.h * kBf16;
    ms += 2 * static_cast<double>(l.vpp) *
          collective_ms(hw, Collective::kSendRecv, bytes, 2, inter(l.tp * l.cp * l.dp, 2));
  }
  return ms;
}

// The end of the step: the gradient reduction beyond what the last backward hides (at least one
// bucket), and the optimizer (gradient norm and AdamW as HBM traffic; the distributed optimizer's
// gather of updated weights). Milliseconds: {exposed reduction, optimizer}.
std::pair<double, double> step_end_ms(const Config& config, const PlanLayout& l, const HardwareProfile& hw,
                                      const RankParams& params, double last_backward) {
  const bool dense_inter = spans_nodes(hw, l.tp, l.cp * l.dp), expert_inter = spans_nodes(hw, l.etp * l.ep, l.edp);
  const Collective reduce = l.distributed_optimizer ? Collective::kReduceScatter : Collective::kAllReduce;
  const StateBytes b = state_bytes(config);
  const double reduce_ms = collective_ms(hw, reduce, params.dense * b.grads, l.dp * l.cp, dense_inter) +
                           collective_ms(hw, reduce, params.expert * b.grads, l.edp, expert_inter);
  const double bucket_ms = collective_ms(hw, reduce, config.parallel.grad_bucket_mb * 1024 * 1024,
                                         std::max<int64_t>(l.dp * l.cp, l.edp), dense_inter || expert_inter);
  const double updated = optimizer_params(params, l);
  // AdamW reads and writes the main weight and moments, reads the gradient, writes the weight;
  // the gradient norm reads every gradient once more.
  const double bytes = updated * (b.weights + 2 * b.main + b.grads + 2 * b.moments) + params.total() * b.grads;
  double optimizer_ms = bytes / (hw.hbm_gbps * 1e6);
  if (l.distributed_optimizer) {
    optimizer_ms += collective_ms(hw, Collective::kAllGather, params.dense * b.weights, l.dp * l.cp, dense_inter) +
                    collective_ms(hw, Collective::kAllGather, params.expert * b.weights, l.edp, expert_inter);
  }
  return {std::max(bucket_ms, reduce_ms - last_backward), optimizer_ms};
}

}  // namespace

PlanPrediction predict_layout(const Config& config, const PlanLayout& l, int64_t gpus, const HardwareProfile& hw) {
  const Share d = share_of(config, l);
  PlanPrediction out;
  out.layout = l;
  const RankParams first = rank_params(d.s, l, true, l.pp == 1), last = rank_params(d.s, l, l.pp == 1, true);
  predict_memory(config, d, l, hw, first, last, out);
  MicroBatchCost mb;
  compute_ms(config, d, hw, mb);
  // Memory-bound kernels: norms and residual adds (22h per token), rotary (4 (q+kv)), SwiGLU
  // (8 F per expert row) and the permutation (8h per row), the loss (3V), in bf16 elements;
  // a third more with full recomputation (the forward's share again).
  const Shape& s = d.s;
  const double elems = 22 * s.h / d.sp + 4 * (s.q + s.kv) / d.tp +
                       d.moe_share * d.rows / d.tokens * (8 * d.expert_ffn + 8 * s.h) +
                       (1 - d.moe_share) * 8 * s.ffn / d.tp;
  mb.memory = (d.layers * d.tokens * elems * (d.full ? 4.0 / 3.0 : 1.0) + 3 * d.tokens * s.vocab / d.tp) * kBf16 /
              (hw.memory_bound_gbps * 1e6);
  mb.gaps = d.layers * hw.gap_ms_per_layer;
  mb.comm = communication_ms(config, d, l, hw);
  const auto [reduce_exposed, optimizer_ms] =
      step_end_ms(config, l, hw, last.total() >= first.total() ? last : first, mb.last_backward);
  out.compute_s = d.micro_batches * mb.compute / 1e3;
  out.memory_bound_s = d.micro_batches * mb.memory / 1e3;
  out.gaps_s = d.micro_batches * mb.gaps / 1e3;
  out.comm_s = (d.micro_batches * mb.comm + reduce_exposed) / 1e3;
  out.bubble_s = (d.pp - 1) / static_cast<double>(l.vpp) * mb.total() / 1e3;
  out.optimizer_s = optimizer_ms / 1e3;
  out.step_s = out.compute_s + out.memory_bound_s + out.gaps_s + out.comm_s + out.bubble_s + out.optimizer_s;
  out.mfu = flops_per_step(config, config.train.global_batch_size, config.train.seq_length) /
            (out.step_s * static_cast<double>(gpus) * hw.peak_tflops * 1e12);
  return out;
}

std::vector<PlanPrediction> plan_layouts(const Config& config, int64_t gpus, const HardwareProfile& profile,
                                         const PlanPins& pins) {
  const auto divisors = [](int64_t n) {
    std::vector<int64_t> d;
    for (int64_t i = 1; i <= n; ++i) {
      if (n % i == 0) d.push_back(i);
    }
    return d;
  };
  const auto allowed = [](const auto& pin, const auto& value) { return !pin || *pin == value; };
  const int64_t experts = std::max<int64_t>(config.moe.num_experts, 1), layers = config.model.num_layers;
  // Candidates beside a pinned value, so a pin outside the usual choices is still tried.
  const auto with_pin = [](std::vector<int64_t> values, std::optional<int64_t> pin) {
    if (pin && *pin > 0 && std::find(values.begin(), values.end(), *pin) == values.end()) values.push_back(*pin);
    return values;
  };
  // The grids: tp within a node (unless pinned), pp dividing the layers, ep dividing the experts,
  // experts unsplit (the folded choice) or split like attention (or as pinned); a dense model has
  // no expert grid to choose.
  std::vector<PlanLayout> grids;
  for (const int64_t tp : divisors(gpus)) {
    for (const int64_t cp : divisors(gpus / tp)) {
      for (const int64_t pp : divisors(gpus / (tp * cp))) {
        for (const int64_t vpp : pp > 1 && layers % pp == 0 ? divisors(layers / pp) : std::vector<int64_t>{1}) {
          for (const int64_t ep : divisors(gpus / pp)) {
            const std::vector<int64_t> etps = config.moe.enabled() && tp > 1 ? std::vector<int64_t>{1, tp}
                                                                              : std::vector<int64_t>{1};
            for (const int64_t etp : config.moe.enabled() ? with_pin(etps, pins.etp) : etps) {
              if ((tp > profile.gpus_per_node && pins.tp != tp) || layers % pp != 0 || experts % ep != 0 || (gpus / pp) % (ep * etp) != 0 ||
                  !allowed(pins.tp, tp) || !allowed(pins.cp, cp) || !allowed(pins.pp, pp) || !allowed(pins.vpp, vpp) ||
                  !allowed(pins.ep, ep) || !allowed(pins.etp, etp)) {
                continue;
              }
              PlanLayout l;
              l.tp = tp, l.cp = cp, l.pp = pp, l.vpp = vpp, l.ep = ep, l.etp = etp;
              l.dp = gpus / (tp * cp * pp), l.edp = gpus / (pp * ep * etp), l.sequence_parallel = tp > 1;
              grids.push_back(l);
            }
          }
        }
      }
    }
  }
  std::vector<PlanPrediction> out;
  for (const PlanLayout& grid : grids) {
    for (const int64_t mb : with_pin({1, 2, 4}, pins.micro_batch)) {
      for (const Recompute recompute :
           {Recompute::kNone, Recompute::kSelective, Recompute::kCoreAttn, Recompute::kMoeAct, Recompute::kFull}) {
        for (const bool distopt : {false, true}) {
          const bool sharded = grid.dp * grid.cp > 1 || grid.edp > 1;  // else nothing to shard over
          if (!allowed(pins.micro_batch, mb) || !allowed(pins.recompute, recompute) ||
              !allowed(pins.distributed_optimizer, distopt) || (distopt && !sharded)) {
            continue;
          }
          PlanLayout l = grid;
          l.micro_batch = mb, l.recompute = recompute, l.distributed_optimizer = distopt;
          if (check_config(config_for_layout(config, l), gpus).empty()) out.push_back(predict_layout(config, l, gpus, profile));
        }
      }
    }
  }
  std::stable_sort(out.begin(), out.end(), [](const PlanPrediction& a, const PlanPrediction& b) {
    if (a.fits != b.fits) return a.fits;
    return a.step_s < b.step_s;
  });
  return out;
}

}  // namespace foldtron
