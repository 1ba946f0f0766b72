// Vocabulary-parallel embedding and cross-entropy (see embedding.h).
#include "layers/embedding.h"

#include <algorithm>
#include <limits>

#include <fmt/format.h>
#include <torch/torch.h>

#include "core/errors.h"
#include "core/text.h"
#include "parallel/communicator.h"
#include "parallel/mappings.h"
#ifdef FOLDTRON_WITH_CUDA
#include <c10/cuda/CUDAStream.h>

#include "layers/cross_entropy_cuda.h"
#endif

namespace foldtron {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

// A shard's view of the targets: the target's column in the shard, or -1 (elsewhere, or ignored).
struct ShardTargets {
  torch::Tensor column;    // [s, b] int64
  torch::Tensor in_shard;  // [s, b]
  torch::Tensor ignored;   // [s, b]
};

ShardTargets shard_targets(const torch::Tensor& targets, int64_t start, int64_t local_vocab) {
  const torch::Tensor ignored = targets == kIgnoreIndex;
  const torch::Tensor in_shard = (targets >= start) & (targets < start + local_vocab) & ~ignored;
  return {torch::where(in_shard, targets - start, torch::full_like(targets, -1)), in_shard, ignored};
}

// Each row's statistics over a shard's first `valid` columns (the rest pad the vocabulary).
struct RowStats {
  torch::Tensor max;      // [s, b] fp32
  torch::Tensor sum_exp;  // [s, b] fp32: sum of exp(z - max)
  torch::Tensor target;   // [s, b] fp32: z at the target's column, 0 where it is -1
};

// The shard in fp32, padded columns -inf (they add nothing to the sum and get no gradient).
torch::Tensor masked_fp32(const torch::Tensor& logits, int64_t valid) {
  torch::Tensor z = logits.to(torch::kFloat);
  const int64_t local_vocab = logits.size(-1);
  if (valid < local_vocab) {
    const torch::Tensor column = torch::arange(local_vocab, logits.options().dtype(torch::kLong));
    z = z.masked_fill(column >= valid, -std::numeric_limits<float>::infinity());
  }
  return z;
}

// The statistics and the gradient with torch's operations, on any device and type.
RowStats torch_row_stats(const torch::Tensor& logits, const ShardTargets& targets, int64_t valid) {
  const torch::Tensor z = masked_fp32(logits, valid);
  const torch::Tensor max = std::get<0>(z.max(-1));
  // A shard whose columns are all -inf (all padding) adds 0, not exp(-inf - -inf).
  const torch::Tensor shift = max.masked_fill(max.isneginf(), 0.0);
  const torch::Tensor sum_exp = (z - shift.unsqueeze(-1)).exp().sum(-1);
  const torch::Tensor column = targets.column.clamp_min(0).unsqueeze(-1);
  const torch::Tensor target = z.gather(-1, column).squeeze(-1) * targets.in_shard;
  return {max, sum_exp, target};
}

// The gradient [s, b, Vp/tp] from the logits [s, b, Vp/tp], the row's max and sum over the whole
// vocabulary and the upstream gradient times not-ignored ([s, b] each).
torch::Tensor torch_grad(const torch::Tensor& logits, const ShardTargets& targets, int64_t valid,
                         const torch::Tensor& max, const torch::Tensor& sum, const torch::Tensor& scale) {
  torch::Tensor grad = (masked_fp32(logits, valid) - max.unsqueeze(-1)).exp().div_(sum.unsqueeze(-1));  // softmax
  grad.scatter_add_(-1, targets.column.clamp_min(0).unsqueeze(-1), -targets.in_shard.unsqueeze(-1).to(grad.dtype()));
  return grad.mul_(scale.unsqueeze(-1)).to(logits.scalar_type());
}

#ifdef FOLDTRON_WITH_CUDA
// The same with the fused kernels (layers/cross_entropy_cuda.h): bf16 or fp32 logits, contiguous
// and 16-byte aligned, rows a multiple of 16 bytes.
bool fused_applies(const torch::Tensor& logits) {
  const auto type = logits.scalar_type();
  const int64_t row_bytes = logits.size(-1) * static_cast<int64_t>(logits.element_size());
  return logits.is_cuda() && (type == torch::kBFloat16 || type == torch::kFloat) && logits.is_contiguous() &&
         logits.size(-1) > 0 && row_bytes % 16 == 0 && reinterpret_cast<uintptr_t>(logits.data_ptr()) % 16 == 0;
}

RowStats fused_row_stats(const torch::Tensor& logits, const ShardTargets& targets, int64_t valid) {
  const torch::Tensor column = targets.column.contiguous();
  const auto options = logits.options().dtype(torch::kFloat);
  RowStats stats{torch::empty(column.sizes(), options), torch::empty(column.sizes(), options),
                 torch::empty(column.sizes(), options)};
  cross_entropy_stats_cuda(logits.data_ptr(), logits.scalar_type() == torch::kBFloat16, column.data_ptr<int64_t>(),
                           stats.max.data_ptr<float>(), stats.sum_exp.data_ptr<float>(),
                           stats.target.data_ptr<float>(), column.numel(), logits.size(-1), valid,
                           c10::cuda::getCurrentCUDAStream().stream());
  return stats;
}

torch::Tensor fused_grad(const torch::Tensor& logits, const ShardTargets& targets, int64_t valid,
                         const torch::Tensor& max, const torch::Tensor& sum, const torch::Tensor& scale) {
  const torch::Tensor column = targets.column.contiguous(), m = max.contiguous(), s = sum.contiguous();
  const torch::Tensor g = scale.to(torch::kFloat).contiguous();
  torch::Tensor grad = torch::empty_like(logits, torch::MemoryFormat::Contiguous);
  cross_entropy_grad_cuda(logits.data_ptr(), logits.scalar_type() == torch::kBFloat16, column.data_ptr<int64_t>(),
                          m.data_ptr<float>(), s.data_ptr<float>(), g.data_ptr<float>(), grad.data_ptr(),
                          column.numel(), logits.size(-1), valid, c10::cuda::getCurrentCUDAStream().stream());
  return grad;
}
#endif

// Forward: loss_i = log S_i - (z_i,t_i - M_i), with M the max over the whole vocabulary (all-reduced
// over tp), S the sum of exp(z - M) (each shard's sum_exp rescaled from its own max to M) and the
// target logit, each summed over tp. Backward: (softmax - onehot(t)) times the upstream gradient,
// 0 where ignored. The logits stay for backward (in their own type), not an fp32 softmax.
// kFused: the CUDA kernels compute the shard's statistics and the gradient; else torch's operations.
template <bool kFused>
struct CrossEntropy : torch::autograd::Function<CrossEntropy<kFused>> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& logits, const torch::Tensor& targets,
                               int64_t group_handle, int64_t vocab) {
    Communicator& tp = *reinterpret_cast<Communicator*>(group_handle);
    const int64_t local_vocab = logits.size(-1);
    const int64_t start = tp.rank() * local_vocab;
    const int64_t padding = vocab < 0 ? 0 : std::clamp<int64_t>(start + local_vocab - vocab, 0, local_vocab);
    const int64_t valid = local_vocab - padding;
    const ShardTargets shard = shard_targets(targets, start, local_vocab);
    RowStats stats;
#ifdef FOLDTRON_WITH_CUDA
    if constexpr (kFused) stats = fused_row_stats(logits, shard, valid);
#endif
    if constexpr (!kFused) stats = torch_row_stats(logits, shard, valid);
    // Over tp (the shards of the vocabulary): the max, the rescaled sums, the target logit.
    torch::Tensor max = stats.max.clone();  // [s, b]
    tp.all_reduce(max, ReduceOp::kMax);
    torch::Tensor sum = stats.sum_exp * (stats.max - max).exp();  // one tp rank: times exp(0) = 1
    tp.all_reduce(sum);
    torch::Tensor target_logit = torch::where(shard.in_shard, stats.target - max, torch::zeros_like(max));
    tp.all_reduce(target_logit);
    const torch::Tensor loss = (sum.log() - target_logit).masked_fill(shard.ignored, 0.0);
    ctx->save_for_backward({logits, shard.column, shard.in_shard, shard.ignored, max, sum});
    ctx->saved_data["valid"] = valid;
    return loss;
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    const auto saved = ctx->get_saved_variables();
    const ShardTargets shard{saved[1], saved[2], saved[3]};
    const int64_t valid = ctx->saved_data["valid"].toInt();
    const torch::Tensor scale = grads[0] * ~shard.ignored;  // [s, b]
    torch::Tensor grad;
#ifdef FOLDTRON_WITH_CUDA
    if constexpr (kFused) grad = fused_grad(saved[0], shard, valid, saved[4], saved[5], scale);
#endif
    if constexpr (!kFused) grad = torch_grad(saved[0], shard, valid, saved[4], saved[5], scale);
    return {grad, torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

int64_t padded_vocab(int64_t vocab, int64_t tp) { return (vocab + tp - 1) / tp * tp; }

VocabParallelEmbedding::VocabParallelEmbedding(const LayerContext& ctx, const std::string& name, int64_t vocab,
                                               int64_t hidden, double init_std, int64_t padding_idx)
    : ctx_(ctx), vocab_(vocab), padding_idx_(padding_idx) {
  const int64_t padded = padded_vocab(vocab, ctx.tp_size());
  weight = register_parameter(
      "weight", shard_param(ctx, full_normal(ctx, name + ".weight", {vocab, hidden}, init_std), 0, padded - vocab));
  const int64_t local = padded / ctx.tp_size();
  vocab_start_ = ctx.tp_rank() * local;
  vocab_end_ = vocab_start_ + local;
}

torch::Tensor VocabParallelEmbedding::forward(const torch::Tensor& ids) {
  // Tokens outside this rank's rows look up row 0 and are zeroed; the sum over tp completes them.
  const torch::Tensor outside = (ids < vocab_start_) | (ids >= vocab_end_);       // [s, b]
  const torch::Tensor local = (ids - vocab_start_).masked_fill(outside, 0);
  // The padding token's row gets no gradient from lookups (torch's padding_idx), when this rank holds it.
  const int64_t padding_idx =
      padding_idx_ >= vocab_start_ && padding_idx_ < vocab_end_ ? padding_idx_ - vocab_start_ : -1;
  torch::Tensor partial =
      torch::embedding(weight, local, padding_idx).masked_fill(outside.unsqueeze(-1), 0.0);  // [s, b, h]
  return ctx_.sp() ? reduce_scatter_to_sequence(partial, *ctx_.tp)  // [s/tp, b, h]
                                : reduce_from_group(partial, *ctx_.tp);          // [s, b, h]
}

torch::Tensor vocab_parallel_cross_entropy(const torch::Tensor& logits, const torch::Tensor& targets,
                                           Communicator& tp, int64_t vocab) {
  FT_CHECK(logits.dim() == targets.dim() + 1 && targets.sizes() == logits.sizes().slice(0, targets.dim()) &&
               targets.device() == logits.device(),
           fmt::format("cross-entropy: targets {} on {} for logits {} on {}", shape_text(targets.sizes().vec()),
                       targets.device().str(), shape_text(logits.sizes().vec()), logits.device().str()));
  const auto group = reinterpret_cast<int64_t>(&tp);
#ifdef FOLDTRON_WITH_CUDA
  if (fused_applies(logits)) return CrossEntropy<true>::apply(logits, targets, group, vocab);
#endif
  return CrossEntropy<false>::apply(logits, targets, group, vocab);
}

}  // namespace foldtron
