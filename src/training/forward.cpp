// Forward of a batch in any layout (see forward.h).
#include "training/forward.h"

#include <torch/torch.h>

#include "core/errors.h"
#include "layers/context_parallel.h"
#include "layers/embedding.h"
#include "models/decoder_lm.h"
#include "parallel/mappings.h"
#include "parallel/process_groups.h"

namespace foldtron {
namespace {

// [S/cp(/tp), b, ...] on this dp rank -> [B, S, ...] on every rank: the sequence gathered over tp
// (with SP) and over cp (then put in position order by `order`), the batch over dp (rows[d]
// sequences each; a rank with none contributes nothing).
torch::Tensor gather_batch(torch::Tensor x, ProcessGroups& groups, bool sequence_parallel,
                           const std::vector<int64_t>& rows, const torch::Tensor& order) {
  torch::NoGradGuard no_grad;
  if (sequence_parallel) x = gather_from_sequence(x, groups.tp());
  if (groups.cp().size() > 1) x = gather_from_sequence(x, groups.cp()).index_select(0, order);
  x = x.transpose(0, 1).contiguous();  // [b, S, ...]
  const int64_t mine = rows[static_cast<size_t>(groups.dp().rank())];
  return groups.dp().all_gather(x.narrow(0, 0, mine).contiguous(), rows);
}

}  // namespace

ForwardResult forward_batch(DecoderLM& model, ProcessGroups& groups, const torch::Tensor& ids_in, torch::Device device,
                            bool sequence_parallel, bool hidden_states) {
  const int64_t batch = ids_in.size(0), seq = ids_in.size(1), dp = groups.dp().size();
  if (sequence_parallel && seq % groups.tp().size() != 0) {
    throw DataError(fmt::format("the input's sequence length {} does not split over tp {} with sequence parallelism",
                                seq, groups.tp().size()),
                    "pad the input to a multiple of tp, or run without --sequence-parallel");
  }
  const int64_t cp = groups.cp().size();
  if (cp > 1 && (seq % (2 * cp) != 0 || (sequence_parallel && seq % (cp * groups.tp().size()) != 0))) {
    throw DataError(fmt::format("the input's sequence length {} does not split into 2*cp = {} chunks{}", seq, 2 * cp,
                                sequence_parallel ? fmt::format(" and over tp*cp = {}", cp * groups.tp().size()) : ""),
                    "pad the input to a multiple of those, or run with a smaller --cp");
  }
  std::vector<int64_t> rows;
  for (int64_t d = 0; d < dp; ++d) rows.push_back(batch / dp + (d < batch % dp ? 1 : 0));
  const int64_t d = groups.dp().rank(), mine = rows[static_cast<size_t>(d)];
  int64_t first = 0;
  for (int64_t r = 0; r < d; ++r) first += rows[static_cast<size_t>(r)];
  // A rank without sequences runs sequence 0 and weighs it 0.
  const torch::Tensor ids = ids_in.narrow(0, mine > 0 ? first : 0, std::max<int64_t>(mine, 1)).t().contiguous().to(device);
  torch::Tensor targets = torch::full_like(ids, kIgnoreIndex);  // [S, b]: next token; the last predicts nothing
  targets.narrow(0, 0, seq - 1).copy_(ids.narrow(0, 1, seq - 1));
  // Context parallelism: this rank's chunks; `order` puts the gathered chunks back in position order.
  torch::Tensor positions, order;
  if (cp > 1) {
    positions = cp_positions(seq, cp, groups.cp().rank(), device);
    order = cp_gathered_positions(seq, cp, device).argsort();
  }
  const torch::Tensor local_ids = cp > 1 ? ids.index_select(0, positions) : ids;
  if (cp > 1) targets = targets.index_select(0, positions);

  ForwardResult result;
  std::vector<torch::Tensor> hidden;
  const torch::Tensor logits = model.logits(local_ids, hidden_states ? &hidden : nullptr, positions);  // [S/cp, b, V/tp]
  const torch::Tensor losses = vocab_parallel_cross_entropy(logits, targets, groups.tp());  // [S/cp, b]
  const double predictions = static_cast<double>(batch * (seq - 1));
  result.loss = losses.sum() * (mine > 0 ? 1.0 / predictions : 0.0);
  torch::Tensor total = result.loss.detach().to(torch::kDouble).reshape({1}).cpu();
  groups.dp_cp().all_reduce(total);
  result.loss_value = total.item<double>();

  result.logits =
      gather_batch(gather_last_dim(logits.detach(), groups.tp()).to(torch::kFloat), groups, false, rows, order);
  for (const torch::Tensor& h : hidden) {
    result.hidden_states.push_back(gather_batch(h.detach().to(torch::kFloat), groups, sequence_parallel, rows, order));
  }
  return result;
}

}  // namespace foldtron
