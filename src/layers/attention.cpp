// Grouped-query self-attention with rotary embeddings (see attention.h).
#include "layers/attention.h"

#include <cmath>

#include <torch/torch.h>

#include "core/torch_compat.h"
#include "layers/context_parallel.h"
#include "layers/recompute.h"
#include "parallel/process_groups.h"
#include "parallel/rng.h"
#ifdef FOLDTRON_WITH_CUDA
#include <c10/cuda/CUDAStream.h>

#include "layers/rotary_cuda.h"
#endif

namespace foldtron {

std::pair<torch::Tensor, torch::Tensor> rotary_tables(const torch::Tensor& positions, int64_t head_dim, double theta,
                                                      torch::ScalarType dtype) {
  const auto options = torch::TensorOptions().dtype(torch::kFloat).device(positions.device());
  const torch::Tensor inv_freq =
      1.0 / torch::pow(theta, torch::arange(0, head_dim, 2, options) / static_cast<double>(head_dim));  // [d/2]
  const torch::Tensor freqs = torch::outer(positions.to(torch::kFloat), inv_freq);                      // [s, d/2]
  const torch::Tensor emb = torch::cat({freqs, freqs}, -1);                                               // [s, d]
  return {emb.cos().to(dtype), emb.sin().to(dtype)};
}

#ifdef FOLDTRON_WITH_CUDA
namespace {

// The fused kernel (layers/rotary_cuda.h) as an autograd function; the tables get no gradient.
class FusedRotary : public torch::autograd::Function<FusedRotary> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& cos,
                               const torch::Tensor& sin) {
    ctx->save_for_backward({cos, sin});
    return rotate(x, cos, sin, false);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    if (!grads[0].defined()) return {torch::Tensor(), torch::Tensor(), torch::Tensor()};
    const torch::autograd::variable_list tables = ctx->get_saved_variables();  // cos, sin [s, d]
    return {rotate(grads[0].contiguous(), tables[0], tables[1], true), torch::Tensor(), torch::Tensor()};
  }

 private:
  static torch::Tensor rotate(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                              bool backward) {
    torch::Tensor y = torch::empty_like(x, torch::MemoryFormat::Contiguous);  // [s, b, heads, d]
    rotary_cuda(x.data_ptr(), cos.data_ptr(), sin.data_ptr(), y.data_ptr(), x.size(0), x.size(1) * x.size(2),
                x.size(3), backward, c10::cuda::getCurrentCUDAStream().stream());
    return y;
  }
};

}  // namespace
#endif

torch::Tensor apply_rotary(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) {
#ifdef FOLDTRON_WITH_CUDA
  const auto bf16 = [](const torch::Tensor& t) { return t.is_cuda() && t.scalar_type() == torch::kBFloat16; };
  if (bf16(x) && bf16(cos) && bf16(sin) && x.dim() == 4 && x.size(3) % 2 == 0 && cos.dim() == 2 &&
      x.is_contiguous() && cos.is_contiguous() && sin.is_contiguous() && cos.sizes() == sin.sizes() &&
      cos.size(0) == x.size(0) && cos.size(1) == x.size(3) && !cos.requires_grad() && !sin.requires_grad()) {
    return FusedRotary::apply(x, cos, sin);
  }
#endif
  const int64_t half = x.size(-1) / 2;
  const torch::Tensor rotated = torch::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
  // cos, sin [s, d] broadcast over [s, b, heads, d].
  return x * cos.unsqueeze(1).unsqueeze(1) + rotated * sin.unsqueeze(1).unsqueeze(1);
}

torch::Tensor core_attention_reference(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                       bool causal, double scale,
                                       const std::function<torch::Tensor(const torch::Tensor&)>& on_probs,
                                       const torch::Tensor& mask) {
  const int64_t repeat = q.size(1) / k.size(1);
  const torch::Tensor keys = k.repeat_interleave(repeat, 1);    // [b, hq, s, d]
  const torch::Tensor values = v.repeat_interleave(repeat, 1);  // [b, hq, s, d]
  torch::Tensor scores = torch::matmul(q, keys.transpose(-1, -2)).to(torch::kFloat) * scale;  // [b, hq, s, s]
  if (causal) {
    const int64_t s = q.size(2);
    const torch::Tensor future = torch::ones({s, s}, torch::TensorOptions().dtype(torch::kBool).device(q.device()))
                                     .triu(1);
    scores = scores.masked_fill(future, -std::numeric_limits<float>::infinity());
  }
  if (mask.defined()) scores = scores.masked_fill(mask.logical_not(), -std::numeric_limits<float>::infinity());
  torch::Tensor probs = torch::softmax(scores, -1);
  if (on_probs) probs = on_probs(probs);
  return torch::matmul(probs.to(q.scalar_type()), values);  // [b, hq, s, d]
}

Attention::Attention(const LayerContext& ctx, const std::string& name, const ModelConfig& model)
    : ctx_(ctx),
      local_heads_(model.num_attention_heads / ctx.tp_size()),
      local_groups_(model.num_query_groups / ctx.tp_size()),
      head_dim_(model.kv_channels()),
      rope_theta_(model.rope_theta),
      dropout_(model.attention_dropout),
      recompute_core_(model.recompute_core_attn()) {
  const int64_t h = model.hidden_size;
  const double std = model.init_std;
  q_proj = register_module("q_proj", std::make_shared<ColumnParallelLinear>(
                                         ctx, name + ".q_proj", h, model.num_attention_heads * head_dim_, model.qkv_bias, std));
  k_proj = register_module("k_proj", std::make_shared<ColumnParallelLinear>(
                                         ctx, name + ".k_proj", h, model.num_query_groups * head_dim_, model.qkv_bias, std));
  v_proj = register_module("v_proj", std::make_shared<ColumnParallelLinear>(
                                         ctx, name + ".v_proj", h, model.num_query_groups * head_dim_, model.qkv_bias, std));
  o_proj = register_module("o_proj", std::make_shared<RowParallelLinear>(ctx, name + ".o_proj",
                                                                        model.num_attention_heads * head_dim_, h, false, std));
}

torch::Tensor Attention::forward(const torch::Tensor& x, const torch::Tensor& positions) {
  torch::Tensor q = q_proj->forward(x);  // [s, b, hq/tp * d]
  torch::Tensor k = k_proj->forward(x);  // [s, b, hkv/tp * d]
  torch::Tensor v = v_proj->forward(x);
  const int64_t s = q.size(0), b = q.size(1);
  q = q.view({s, b, local_heads_, head_dim_});
  k = k.view({s, b, local_groups_, head_dim_});
  v = v.view({s, b, local_groups_, head_dim_});
  const auto [cos, sin] = rotary_tables(positions, head_dim_, rope_theta_, q.scalar_type());
  q = apply_rotary(q, cos, sin).permute({1, 2, 0, 3});  // [b, hq, s, d]
  k = apply_rotary(k, cos, sin).permute({1, 2, 0, 3});  // [b, hkv, s, d]
  v = v.permute({1, 2, 0, 3});
  torch::Tensor context;
  if (recompute_core_ && is_training()) {
    // Selective recomputation: only q, k and v are kept; backward recomputes the attention.
    context = checkpoint([this](const std::vector<torch::Tensor>& in) -> std::vector<torch::Tensor> {
                           return {attend(in[0], in[1], in[2])};
                         },
                         {q, k, v}, ctx_.rng)[0];
  } else {
    context = attend(q, k, v);
  }
  context = context.permute({2, 0, 1, 3}).reshape({s, b, local_heads_ * head_dim_});  // [s, b, hq/tp * d]
  return o_proj->forward(context);
}

torch::Tensor Attention::attend(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v) {
  if (ctx_.groups == nullptr || ctx_.groups->cp().size() == 1) return core_attention(q, k, v, torch::Tensor());
  return context_parallel_attention(q, k, v, ctx_.groups->cp(), ctx_.cp_comm_type,
                                    1.0 / std::sqrt(static_cast<double>(head_dim_)),
                                    [this](const torch::Tensor& cq, const torch::Tensor& ck, const torch::Tensor& cv,
                                           const torch::Tensor& mask) { return core_attention(cq, ck, cv, mask); });
}

torch::Tensor Attention::core_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                        const torch::Tensor& mask) {
  const double scale = 1.0 / std::sqrt(static_cast<double>(head_dim_));
  torch::Tensor context;
  const bool dropout = is_training() && dropout_ > 0;
#if FOLDTRON_TORCH_AT_LEAST(2, 0)
  if (!dropout) {
    const int64_t repeat = local_heads_ / local_groups_;
    context = at::scaled_dot_product_attention(q, k.repeat_interleave(repeat, 1), v.repeat_interleave(repeat, 1),
                                               mask.defined() ? c10::optional<torch::Tensor>(mask) : c10::nullopt,
                                               0.0, /*is_causal=*/!mask.defined(), scale);
  }
#endif
  if (!context.defined()) {
    // Explicit path; with dropout on the probabilities from the model-parallel stream (heads are
    // split over tp, so each rank drops its own heads differently).
    std::function<torch::Tensor(const torch::Tensor&)> drop;
    if (dropout) drop = [&](const torch::Tensor& p) { return ctx_.rng->dropout(p, dropout_, RngStream::kModelParallel); };
    context = core_attention_reference(q, k, v, /*causal=*/!mask.defined(), scale, drop, mask);
  }
  return context;  // [b, hq, s, d]
}

}  // namespace foldtron
