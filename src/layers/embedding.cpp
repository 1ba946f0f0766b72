// Vocabulary-parallel embedding and cross-entropy (see embedding.h).
#include "layers/embedding.h"

#include <algorithm>
#include <limits>

#include <torch/torch.h>

#include "core/errors.h"
#include "parallel/communicator.h"
#include "parallel/mappings.h"

namespace foldtron {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

// Forward: loss_i = log(sum_v exp(z_iv - m_i)) - (z_i,t_i - m_i), with the max m, the target
// logit and the sum each all-reduced over tp. Backward: softmax - onehot(t), masked.
struct VocabParallelCrossEntropy : torch::autograd::Function<VocabParallelCrossEntropy> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& logits, const torch::Tensor& targets,
                               int64_t group_handle, int64_t vocab) {
    Communicator& tp = *reinterpret_cast<Communicator*>(group_handle);
    const int64_t local_vocab = logits.size(-1);
    const int64_t start = tp.rank() * local_vocab;
    torch::Tensor z = logits.to(torch::kFloat);                      // [s, b, Vp/tp]
    const int64_t padding = vocab < 0 ? 0 : std::clamp<int64_t>(start + local_vocab - vocab, 0, local_vocab);
    if (padding > 0) {
      // Padded columns: -inf, so they add nothing to the sum and get no gradient.
      const torch::Tensor column = torch::arange(local_vocab, targets.options());
      z = z.masked_fill(column >= local_vocab - padding, -std::numeric_limits<float>::infinity());
    }
    torch::Tensor max = std::get<0>(z.max(-1));                      // [s, b]
    tp.all_reduce(max, ReduceOp::kMax);
    z = z - max.unsqueeze(-1);
    const torch::Tensor ignored = targets == kIgnoreIndex;            // [s, b]
    const torch::Tensor in_shard = (targets >= start) & (targets < start + local_vocab) & ~ignored;
    const torch::Tensor local_target = torch::where(in_shard, targets - start, torch::zeros_like(targets));
    torch::Tensor target_logit = z.gather(-1, local_target.unsqueeze(-1)).squeeze(-1) * in_shard;  // [s, b]
    tp.all_reduce(target_logit);
    torch::Tensor exp = z.exp();
    torch::Tensor sum_exp = exp.sum(-1);
    tp.all_reduce(sum_exp);
    torch::Tensor loss = (sum_exp.log() - target_logit).masked_fill(ignored, 0.0);
    ctx->save_for_backward({exp.div_(sum_exp.unsqueeze(-1)), local_target, in_shard, ignored});
    ctx->saved_data["dtype"] = static_cast<int64_t>(logits.scalar_type());
    return loss;
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    const auto saved = ctx->get_saved_variables();
    torch::Tensor grad = saved[0].clone();  // softmax over the full vocabulary, this shard
    grad.scatter_add_(-1, saved[1].unsqueeze(-1), -saved[2].unsqueeze(-1).to(grad.dtype()));
    grad.mul_((grads[0] * ~saved[3]).unsqueeze(-1));
    const auto dtype = static_cast<torch::ScalarType>(ctx->saved_data["dtype"].toInt());
    return {grad.to(dtype), torch::Tensor(), torch::Tensor(), torch::Tensor()};
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
  FT_CHECK(logits.dim() == targets.dim() + 1, "logits must have one more dimension than targets");
  return VocabParallelCrossEntropy::apply(logits, targets, reinterpret_cast<int64_t>(&tp), vocab);
}

}  // namespace foldtron
