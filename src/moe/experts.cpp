// Routed experts (see experts.h).
#include "moe/experts.h"

#include <cstdint>
#include <mutex>
#include <optional>

#include <fmt/format.h>
#include <torch/torch.h>

#include "core/errors.h"
#include "core/math.h"
#include "core/torch_compat.h"
#include "layers/recompute.h"
#ifdef FOLDTRON_WITH_CUDA
#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDAStream.h>

#include "moe/swiglu_cuda.h"
#endif
#ifdef FOLDTRON_WITH_GROUPED_WGRAD
#include "moe/grouped_wgrad_cuda.h"
#endif

namespace foldtron {

// ---- ExpertCounts ----

struct ExpertCounts::State {
  torch::Tensor device;  // [E] int64 (undefined: host counts not yet on any device)
  int64_t total = -1;    // the sum the counts must have (-1: unchecked)
  torch::Tensor pinned;  // the host copy in flight (CUDA counts)
#ifdef FOLDTRON_WITH_CUDA
  std::optional<at::cuda::CUDAEvent> copied;  // recorded after the copy to `pinned`
#endif
  std::once_flag read;
  std::vector<int64_t> host;
  torch::Tensor ends;  // [E] int32 row ends, once asked for
  std::mutex ends_mutex;
};

ExpertCounts::ExpertCounts() : ExpertCounts(std::vector<int64_t>{}) {}

ExpertCounts::ExpertCounts(std::shared_ptr<State> state) : state_(std::move(state)) {}

ExpertCounts::ExpertCounts(std::vector<int64_t> host) : state_(std::make_shared<State>()) {
  state_->host = std::move(host);
  std::call_once(state_->read, [] {});  // nothing to wait for
}

ExpertCounts ExpertCounts::from_device(const torch::Tensor& counts, int64_t total) {
  FT_CHECK(counts.dim() == 1 && counts.scalar_type() == torch::kLong, "ExpertCounts: counts must be [E] int64");
  auto state = std::make_shared<State>();
  state->device = counts.contiguous();
  state->total = total;
#ifdef FOLDTRON_WITH_CUDA
  if (counts.is_cuda()) {
    state->pinned = torch::empty(counts.sizes(), counts.options().device(torch::kCPU).pinned_memory(true));
    state->pinned.copy_(counts, /*non_blocking=*/true);
    state->copied.emplace();
    state->copied->record(c10::cuda::getCurrentCUDAStream(counts.device().index()));
    return ExpertCounts(std::move(state));
  }
#endif
  state->pinned = counts.to(torch::kCPU).contiguous().clone();  // on the host: nothing to wait for
  return ExpertCounts(std::move(state));
}

int64_t ExpertCounts::size() const {
  return state_->device.defined() ? state_->device.size(0) : static_cast<int64_t>(state_->host.size());
}

const std::vector<int64_t>& ExpertCounts::host() const {
  State& s = *state_;
  std::call_once(s.read, [&s] {
#ifdef FOLDTRON_WITH_CUDA
    if (s.copied) s.copied->synchronize();
#endif
    const int64_t* data = s.pinned.data_ptr<int64_t>();
    s.host.assign(data, data + s.pinned.numel());
    const int64_t rows = sum_of(s.host);
    FT_CHECK(s.total < 0 || rows == s.total,
             fmt::format("ExpertCounts: the experts' rows add up to {}, not the {} the dispatch made", rows, s.total));
  });
  return s.host;
}

torch::Tensor ExpertCounts::row_ends(const torch::Device& device) const {
  State& s = *state_;
  const std::lock_guard<std::mutex> lock(s.ends_mutex);
  if (!s.ends.defined() || s.ends.device() != device) {
    if (s.device.defined()) {
      s.ends = s.device.to(device).cumsum(0).to(torch::kInt);
    } else {
      std::vector<int32_t> ends;
      int64_t end = 0;
      for (int64_t c : s.host) ends.push_back(static_cast<int32_t>(end += c));
      s.ends = torch::tensor(ends, torch::kInt).to(device, /*non_blocking=*/true);
    }
  }
  return s.ends;
}

namespace {
// An IValue capsule holds a CustomClassHolder: this one holds the shared state.
struct CountsCapsule : torch::CustomClassHolder {
  std::shared_ptr<void> state;
};
}  // namespace

c10::IValue ExpertCounts::to_ivalue() const {
  auto capsule = c10::make_intrusive<CountsCapsule>();
  capsule->state = state_;
  return c10::IValue::make_capsule(std::move(capsule));
}

ExpertCounts ExpertCounts::from_ivalue(const c10::IValue& value) {
  const auto capsule = c10::static_intrusive_pointer_cast<CountsCapsule>(value.toCapsule());
  return ExpertCounts(std::static_pointer_cast<State>(capsule->state));
}

namespace {

ParamInfo expert_info(const ExpertShard& shard, int64_t dim, int64_t parts) {
  ParamInfo info;
  info.tp_split_dim = dim;
  info.split_parts = parts;
  info.split_rank = shard.etp_rank;
  info.split_size = shard.etp_size;
  info.expert = true;
  info.expert_begin = shard.first_expert;
  info.num_experts = shard.num_experts;
  return info;
}

#ifdef FOLDTRON_WITH_CUDA
// The fused kernels as an autograd function: saves the product, not silu(gate) beside it.
class FusedSwiglu : public torch::autograd::Function<FusedSwiglu> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& gate_up) {
    const int64_t ffn = gate_up.size(-1) / 2;
    torch::Tensor out = torch::empty({gate_up.size(0), ffn}, gate_up.options());  // [R, F]
    swiglu_forward_cuda(gate_up.data_ptr(), out.data_ptr(), gate_up.size(0), ffn,
                        c10::cuda::getCurrentCUDAStream().stream());
    ctx->save_for_backward({gate_up});
    return out;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    if (!grads[0].defined()) return {torch::Tensor()};
    const torch::Tensor gate_up = ctx->get_saved_variables()[0];  // [R, 2F]
    const torch::Tensor grad_out = grads[0].contiguous();         // [R, F]
    torch::Tensor grad = torch::empty_like(gate_up);              // [R, 2F]
    swiglu_backward_cuda(gate_up.data_ptr(), grad_out.data_ptr(), grad.data_ptr(), gate_up.size(0),
                         gate_up.size(-1) / 2, c10::cuda::getCurrentCUDAStream().stream());
    return {grad};
  }
};
#endif

#ifdef FOLDTRON_WITH_GROUPED_WGRAD
// Whether the grouped kernel takes these operands: contiguous bf16 rows dy [R, N] and x [R, K], an
// fp32 [E, N, K] main gradient and E int32 row ends, all on a Hopper GPU, the sizes and data as
// its TMA loads need them (grouped_wgrad_operands_fit).
bool grouped_wgrad_takes(const torch::Tensor& out, const torch::Tensor& dy, const torch::Tensor& x,
                         const torch::Tensor& row_ends) {
  return out.is_cuda() && out.scalar_type() == torch::kFloat && out.dim() == 3 && out.is_contiguous() &&
         dy.scalar_type() == torch::kBFloat16 && x.scalar_type() == torch::kBFloat16 && dy.dim() == 2 &&
         x.dim() == 2 && dy.is_contiguous() && x.is_contiguous() && dy.size(1) == out.size(1) &&
         x.size(1) == out.size(2) && row_ends.is_cuda() && row_ends.scalar_type() == torch::kInt &&
         row_ends.is_contiguous() && row_ends.numel() == out.size(0) &&
         grouped_wgrad_operands_fit(dy.data_ptr(), x.data_ptr(), out.data_ptr<float>(), out.size(1), out.size(2)) &&
         grouped_wgrad_supported();
}

// The grouped kernel for several experts whose gradients are each at most 32 Mi elements, one
// cuBLAS GEMM per expert otherwise. Measured on an H200 (bench/grouped_wgrad, docs/performance.md):
// at Qwen2-57B-A14B's shapes (64 experts, [5120, 3584] and [3584, 2560] = 17.5 and 8.75 Mi
// elements, 2,048 rows each) these tiles take 11% and 10% less time than the per-expert GEMMs; at
// Mixtral-8x7B's ([28672, 4096] and [4096, 14336] = 112 and 56 Mi, 8 experts of 4,096 rows) the
// best of 18 tile shapes and orders take 3-5% more with even rows (with uneven ones gate/up within
// 0.5%, down 5% less: one case against the rule). A large expert's GEMM keeps the GPU full on its
// own; small ones leave it idle in each GEMM's last wave of tiles. 17.5-56 Mi is not measured.
// Cooperative 128x256 tiles down M were the fastest at Qwen2's gate/up and within 4% of the
// fastest at its down. In a whole step (Qwen2 truncated to 2 layers, micro-batch 2: 1,024 rows
// per expert, half the bench's reduction length) the step is no faster (0.5992 against 0.5994 s):
// traced, the grouped calls took 62.9 ms against the per-expert GEMMs' 60.7 ms, and the fewer
// launches saved 3.6 ms of gaps. Where between 1,024 and 2,048 rows the kernel starts to pay is
// not measured.
std::optional<WgradConfig> grouped_wgrad_choice(int64_t n, int64_t k, int groups) {
  constexpr int64_t kLargestGrouped = int64_t{32} << 20;
  if (groups < 2 || n * k > kLargestGrouped) return std::nullopt;
  return WgradConfig{WgradTiles::kCooperative128x256, false, 1};
}
#endif

// out[e] ([E, N, K], fp32 or the inputs' bf16) = dy_e^T x_e (dy [R, N], x [R, K]) for the rows of
// each expert, or += when `accumulate`, with no bf16 product to widen or add: into fp32, one
// grouped GEMM where this build has the kernel and the operands suit it (row_ends [E] int32 on the
// device, counts on the host), else one cuBLAS GEMM per expert; into bf16 (train.main_grads_dtype),
// one GEMM per expert, accumulating in fp32 (cuBLAS may split the reduction with bf16 partial sums:
// torch allows it for bf16 by default), whose epilogue adds the product to the gradient and
// rounds it to bf16.
void expert_wgrad_into(const torch::Tensor& out, const torch::Tensor& dy, const torch::Tensor& x,
                       const torch::Tensor& row_ends, const std::vector<int64_t>& counts, bool accumulate) {
  // An expert without rows gets no GEMM either way: written, its gradient is zero.
  for (size_t e = 0; e < counts.size(); ++e) {
    if (counts[e] == 0 && !accumulate) out[static_cast<int64_t>(e)].zero_();
  }
#ifdef FOLDTRON_WITH_GROUPED_WGRAD
  const auto groups = static_cast<int>(counts.size());
  const std::optional<WgradConfig> config =
      out.dim() == 3 ? grouped_wgrad_choice(out.size(1), out.size(2), groups) : std::nullopt;
  if (config && grouped_wgrad_takes(out, dy, x, row_ends)) {
    const torch::Tensor buffer = torch::empty({static_cast<int64_t>(grouped_wgrad_buffer_bytes(groups, *config))},
                                              out.options().dtype(torch::kByte));
    grouped_wgrad_cuda(dy.data_ptr(), x.data_ptr(), row_ends.data_ptr<int32_t>(), out.data_ptr<float>(), groups,
                       out.size(1), out.size(2), accumulate, buffer.data_ptr(), *config,
                       c10::cuda::getCurrentCUDAStream().stream());
    return;
  }
#else
  (void)row_ends;
#endif
  int64_t start = 0;
  for (size_t e = 0; e < counts.size(); ++e) {
    torch::Tensor target = out[static_cast<int64_t>(e)];  // a view: written in place
    const int64_t rows = counts[e];
    if (rows == 0) continue;
    const torch::Tensor a = dy.narrow(0, start, rows).t(), b = x.narrow(0, start, rows);
    if (out.scalar_type() != dy.scalar_type()) {
      torch_compat::mm_fp32_out(target, a, b, accumulate);
    } else if (accumulate) {
      target.addmm_(a, b);
    } else {
      torch::mm_out(target, a, b);
    }
    start += rows;
  }
}

// y [R, N] = x [R, K] weight[e]^T for the rows of expert e, weight [E, N, K], offs [E] the row
// ends: one grouped GEMM forward and one for the input gradient (torch >= 2.8). The weight
// gradient is a grouped GEMM as well, unless the registry's MainGradWriter (a ParamRegistry*, as
// an integer; 0 for none) takes it when backward runs (bf16 main gradients, or fp32 ones with
// torch >= 2.9): then it goes straight into the main gradient and autograd gets an uninitialized
// placeholder, which the buffers drop.
class GroupedLinear : public torch::autograd::Function<GroupedLinear> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& weight, const torch::Tensor& offs, const ExpertCounts& counts,
                               int64_t registry) {
    ctx->save_for_backward({x, weight, offs});
    ctx->saved_data["counts"] = counts.to_ivalue();  // read on the host only here in backward
    ctx->saved_data["registry"] = registry;
    return torch_compat::grouped_mm(x, weight.transpose(1, 2), offs);  // [R, N]
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const torch::autograd::variable_list saved = ctx->get_saved_variables();
    const torch::Tensor &x = saved[0], &weight = saved[1], &offs = saved[2];
    if (!grads[0].defined()) return {torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
    const torch::Tensor dy = grads[0].contiguous();  // [R, N]
    torch::Tensor dx, dw;
    if (ctx->needs_input_grad(0)) dx = torch_compat::grouped_mm(dy, weight, offs);  // [R, K]
    if (ctx->needs_input_grad(1)) {
      // Looked up now, not in forward: buffers made or dropped in between are seen.
      const auto* registry = reinterpret_cast<const ParamRegistry*>(static_cast<intptr_t>(ctx->saved_data["registry"].toInt()));
      MainGradWriter* writer = registry != nullptr ? registry->main_grad_writer() : nullptr;
      const ExpertCounts saved_counts = ExpertCounts::from_ivalue(ctx->saved_data["counts"]);
      const std::vector<int64_t>& counts = saved_counts.host();  // the copy forward started, done by now
      const auto write = [&](const torch::Tensor& main_grad, bool accumulate) {
        expert_wgrad_into(main_grad, dy, x, offs, counts, accumulate);
      };
      const bool writable = writer != nullptr &&
                            (writer->main_grad_dtype() != torch::kFloat || torch_compat::has_mm_fp32_out());
      if (writable && writer->write_main_grad(weight, write)) {
        dw = torch::empty_like(weight);  // the placeholder
      } else {
        dw = torch_compat::grouped_mm(dy.t(), x, offs);  // [E, N, K]
      }
    }
    return {dx, dw, torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

std::string expert_wgrad_kernel() {
#if defined(FOLDTRON_WITH_GROUPED_WGRAD)
  return fmt::format("into fp32 main gradients one grouped GEMM for two or more experts of at most 32 Mi elements "
                     "each on Hopper GPUs (CUTLASS {}), else a cuBLAS GEMM per expert; into bf16 ones a cuBLAS GEMM "
                     "per expert",
                     grouped_wgrad_cutlass_version());
#elif defined(FOLDTRON_WITH_CUDA)
  return "a cuBLAS GEMM per expert (built without CUTLASS)";
#else
  return "a GEMM per expert";
#endif
}

torch::Tensor swiglu(const torch::Tensor& gate_up) {
#ifdef FOLDTRON_WITH_CUDA
  if (gate_up.is_cuda() && gate_up.scalar_type() == torch::kBFloat16 && gate_up.dim() == 2 && gate_up.is_contiguous()) {
    return FusedSwiglu::apply(gate_up);
  }
#endif
  const auto halves = gate_up.chunk(2, -1);
  return torch::silu(halves[0]) * halves[1];
}

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
  registry_ = ctx.registry;
}

torch::Tensor grouped_linear(const torch::Tensor& x, const torch::Tensor& weight, const ExpertCounts& counts,
                             const ParamRegistry* registry) {
  if (torch_compat::has_grouped_mm() && x.is_cuda() && x.scalar_type() == torch::kBFloat16 && x.size(0) > 0) {
    return GroupedLinear::apply(x, weight, counts.row_ends(x.device()), counts,
                                static_cast<int64_t>(reinterpret_cast<intptr_t>(registry)));
  }
  // Experts without tokens still run (on zero rows): every rank's autograd graph must reach the
  // dispatcher's collectives, whatever the counts.
  const std::vector<int64_t>& rows = counts.host();
  std::vector<torch::Tensor> outputs;
  int64_t offset = 0;
  for (size_t e = 0; e < rows.size(); ++e) {
    outputs.push_back(torch::matmul(x.narrow(0, offset, rows[e]), weight[static_cast<int64_t>(e)].t()));
    offset += rows[e];
  }
  return torch::cat(outputs, 0);
}

torch::Tensor GroupedExperts::forward(const torch::Tensor& x, const ExpertCounts& counts) {
  const torch::Tensor gate_up = grouped_linear(x, gate_up_proj, counts, registry_);  // [R, 2F/etp]
  const CheckpointFn act_down = [this, counts](const std::vector<torch::Tensor>& in) -> std::vector<torch::Tensor> {
    return {grouped_linear(swiglu(in[0]), down_proj, counts, registry_)};  // [R, h]
  };
  return (recompute_act && is_training() ? checkpoint(act_down, {gate_up}, nullptr) : act_down({gate_up}))[0];
}

SequentialExperts::SequentialExperts(const LayerContext& ctx, const std::string& name, const ExpertShard& shard,
                                     int64_t hidden, int64_t ffn, double init_std) {
  ParamInfo column = expert_info(shard, 0, 1), row = expert_info(shard, 1, 1);
  column.num_experts = row.num_experts = 0;  // one expert per tensor, expert_begin says which
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

torch::Tensor SequentialExperts::forward(const torch::Tensor& x, const ExpertCounts& counts) {
  const std::vector<int64_t>& rows = counts.host();
  std::vector<torch::Tensor> outputs;
  int64_t offset = 0;
  for (size_t e = 0; e < rows.size(); ++e) {
    const torch::Tensor xe = x.narrow(0, offset, rows[e]);  // [c, h]
    const Weights& w = experts[e];
    const torch::Tensor h = torch::silu(torch::nn::functional::linear(xe, w.gate)) *
                            torch::nn::functional::linear(xe, w.up);  // [c, F/etp]
    outputs.push_back(torch::nn::functional::linear(h, w.down));      // [c, h]
    offset += rows[e];
  }
  return torch::cat(outputs, 0);
}

}  // namespace foldtron
