// Tensor-parallel attention (see attention.h).
#include "layers/attention.h"

#include <cmath>

#include <torch/torch.h>

#include "core/errors.h"
#include "core/torch_compat.h"
#include "layers/context_parallel.h"
#include "layers/norm.h"
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
  const torch::Tensor freqs = positions.to(torch::kFloat).unsqueeze(-1) * inv_freq;                     // [..., d/2]
  const torch::Tensor emb = torch::cat({freqs, freqs}, -1);                                               // [..., d]
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
  // Tables [s, d] or [s, b, d] broadcast over [s, b, heads, d].
  const auto spread = [](const torch::Tensor& t) { return t.dim() == 2 ? t.unsqueeze(1).unsqueeze(1) : t.unsqueeze(2); };
  return x * spread(cos) + rotated * spread(sin);
}

torch::Tensor repeat_heads(const torch::Tensor& x, int64_t repeat) {
  return repeat == 1 ? x : x.repeat_interleave(repeat, 1);
}

torch::Tensor core_attention_reference(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                       double scale, const torch::Tensor& mask,
                                       const std::function<torch::Tensor(const torch::Tensor&)>& on_probs) {
  const int64_t repeat = q.size(1) / k.size(1);
  const torch::Tensor keys = repeat_heads(k, repeat);    // [b, hq, sk, d]
  const torch::Tensor values = repeat_heads(v, repeat);  // [b, hq, sk, d]
  torch::Tensor scores = torch::matmul(q, keys.transpose(-1, -2)).to(torch::kFloat) * scale;  // [b, hq, sq, sk]
  const torch::Tensor allowed =
      mask.defined() ? mask : attention_mask(q.size(2), k.size(2), /*causal=*/true, torch::Tensor(), q.device());
  scores = scores.masked_fill(allowed.logical_not(), -std::numeric_limits<float>::infinity());
  torch::Tensor probs = torch::softmax(scores, -1);
  if (on_probs) probs = on_probs(probs);
  return torch::matmul(probs.to(q.scalar_type()), values);  // [b, hq, sq, d]
}

torch::Tensor attention_mask(int64_t sq, int64_t sk, bool causal, const torch::Tensor& key_padding,
                             torch::Device device) {
  const auto options = torch::TensorOptions().dtype(torch::kBool).device(device);
  // Query i sits at key position i + (sk - sq): the queries are the last sq of the sk positions.
  const torch::Tensor own = torch::ones({sq, sk}, options).tril(sk - sq).logical_xor(
      torch::ones({sq, sk}, options).tril(sk - sq - 1));                                     // [sq, sk]
  torch::Tensor mask = causal ? torch::ones({sq, sk}, options).tril(sk - sq) : torch::ones({sq, sk}, options);
  mask = mask.view({1, 1, sq, sk});
  if (key_padding.defined()) mask = mask.logical_and(key_padding.to(device).view({-1, 1, 1, sk}));  // [b, 1, sq, sk]
  const torch::Tensor empty = mask.any(-1, /*keepdim=*/true).logical_not();  // [b, 1, sq, 1]
  return mask.logical_or(empty.logical_and(own));
}

void AttentionCache::select(const torch::Tensor& rows) {
  if (key.defined()) key = key.index_select(0, rows);
  if (value.defined()) value = value.index_select(0, rows);
}

Attention::Attention(const LayerContext& ctx, const std::string& name, const AttentionOptions& options)
    : ctx_(ctx),
      options_(options),
      local_heads_(options.heads / ctx.tp_size()),
      local_groups_(options.groups / ctx.tp_size()) {
  const int64_t h = options.hidden, d = options.head_dim;
  const double std = options.init_std;
  q_proj = register_module("q_proj", std::make_shared<ColumnParallelLinear>(ctx, name + ".q_proj", h, options.heads * d,
                                                                           options.qkv_bias, std));
  k_proj = register_module("k_proj", std::make_shared<ColumnParallelLinear>(ctx, name + ".k_proj", h, options.groups * d,
                                                                           options.qkv_bias, std));
  v_proj = register_module("v_proj", std::make_shared<ColumnParallelLinear>(ctx, name + ".v_proj", h, options.groups * d,
                                                                           options.qkv_bias, std));
  o_proj = register_module("o_proj", std::make_shared<RowParallelLinear>(ctx, name + ".o_proj", options.heads * d, h,
                                                                        options.out_bias, std));
  if (options.qk_norm) {
    // One weight over head_dim for every head: a tp rank sees only its heads, so the gradient is
    // summed over tp (registered like a sequence-parallel weight).
    const bool partial = ctx.tp_size() > 1;
    q_norm = register_module("q_norm", std::make_shared<Norm>(ctx, Normalization::kRmsNorm, d, options.norm_eps, partial));
    k_norm = register_module("k_norm", std::make_shared<Norm>(ctx, Normalization::kRmsNorm, d, options.norm_eps, partial));
  }
}

torch::Tensor Attention::heads(const torch::Tensor& x, int64_t count, const std::shared_ptr<Norm>& norm,
                               const AttentionInputs& in) const {
  torch::Tensor t = x.view({x.size(0), x.size(1), count, options_.head_dim});  // [s, b, heads/tp, d]
  if (norm) t = norm->forward(t);
  if (options_.rope_theta > 0 && !options_.cross) {
    const auto [cos, sin] = rotary_tables(in.positions, options_.head_dim, options_.rope_theta, t.scalar_type());
    t = apply_rotary(t, cos, sin);
  }
  return t.permute({1, 2, 0, 3});  // [b, heads/tp, s, d]
}

torch::Tensor Attention::forward(const torch::Tensor& x, const AttentionInputs& in) {
  const torch::Tensor q = heads(q_proj->forward(x), local_heads_, q_norm, in);  // [b, hq/tp, s, d]
  const int64_t s = q.size(2), b = q.size(0);
  torch::Tensor k, v;  // [b, hkv/tp, sk, d]
  AttentionCache* cache = in.cache;
  if (options_.cross && cache && cache->key.defined()) {
    k = cache->key;  // the encoder's keys and values, computed at the first step
    v = cache->value;
  } else {
    const torch::Tensor& source = options_.cross ? in.memory : x;
    FT_CHECK(source.defined(), "cross-attention needs the encoder output");
    k = heads(k_proj->forward(source), local_groups_, k_norm, in);
    v = v_proj->forward(source);
    v = v.view({v.size(0), v.size(1), local_groups_, options_.head_dim}).permute({1, 2, 0, 3});
    if (cache && !options_.cross && cache->key.defined()) {
      k = torch::cat({cache->key, k}, 2);
      v = torch::cat({cache->value, v}, 2);
    }
    if (cache) {
      cache->key = k;
      cache->value = v;
    }
  }
  const int64_t sk = k.size(2);
  const bool causal = !options_.cross && in.causal;
  // Plain causal self-attention over whole sequences takes the fused causal kernels (and context
  // parallelism); anything else builds its mask.
  torch::Tensor mask = in.mask;  // built once for every layer by the model, or here
  if (mask.defined()) {
    FT_CHECK(mask.size(-2) == s && mask.size(-1) == sk, "a prebuilt attention mask of another shape");
  } else if (!(causal && sk == s && !in.key_padding.defined())) {
    mask = attention_mask(s, sk, causal, in.key_padding, q.device());  // [b or 1, 1, s, sk]
  }
  torch::Tensor context;
  if (options_.recompute && is_training()) {
    // Selective recomputation: only q, k and v are kept; backward recomputes the attention.
    context = checkpoint([this, mask](const std::vector<torch::Tensor>& t) -> std::vector<torch::Tensor> {
                           return {attend(t[0], t[1], t[2], mask)};
                         },
                         {q, k, v}, ctx_.rng)[0];
  } else {
    context = attend(q, k, v, mask);
  }
  context = context.permute({2, 0, 1, 3}).reshape({s, b, local_heads_ * options_.head_dim});  // [s, b, hq/tp * d]
  return o_proj->forward(context);
}

torch::Tensor Attention::attend(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                const torch::Tensor& mask) {
  // Context-parallel attention knows the causal mask of its chunks only; models keep padding,
  // caches and bidirectional attention away from it (validation and forward refuse them).
  FT_CHECK(!mask.defined() || !ctx_.context_parallel(), "an attention mask under context parallelism");
  if (!ctx_.context_parallel()) return core_attention(q, k, v, mask);
  return context_parallel_attention(
      q, k, v, ctx_.groups->cp(), ctx_.cp_comm_type, 1.0 / std::sqrt(static_cast<double>(options_.head_dim)),
      [this](const torch::Tensor& cq, const torch::Tensor& ck, const torch::Tensor& cv, const torch::Tensor& cp_mask) {
        return core_attention(cq, ck, cv, cp_mask);
      },
      /*dropout=*/is_training() && options_.dropout > 0);
}

torch::Tensor Attention::core_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                        const torch::Tensor& mask) {
  const double scale = 1.0 / std::sqrt(static_cast<double>(options_.head_dim));
  const bool dropout = is_training() && options_.dropout > 0;
  if (torch_compat::has_sdpa() && !dropout) {
    const int64_t repeat = local_heads_ / local_groups_;
    return torch_compat::scaled_dot_product_attention(q, repeat_heads(k, repeat), repeat_heads(v, repeat), mask,
                                                      /*causal=*/!mask.defined(), scale);  // [b, hq, s, d]
  }
  // Explicit path; with dropout on the probabilities from the model-parallel stream (heads are
  // split over tp, so each rank drops its own heads differently).
  std::function<torch::Tensor(const torch::Tensor&)> drop;
  if (dropout) {
    drop = [&](const torch::Tensor& p) { return ctx_.rng->dropout(p, options_.dropout, RngStream::kModelParallel); };
  }
  return core_attention_reference(q, k, v, scale, mask, drop);  // [b, hq, s, d]
}

}  // namespace foldtron
