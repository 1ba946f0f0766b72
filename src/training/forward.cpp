// Forward of a batch in any layout (see forward.h).
#include "training/forward.h"

#include <functional>

#include <torch/torch.h>

#include "core/errors.h"
#include "layers/context_parallel.h"
#include "layers/embedding.h"
#include "models/decoder_lm.h"
#include "parallel/mappings.h"
#include "parallel/process_groups.h"
#include "training/pipeline.h"

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
  const torch::Tensor positions = cp_positions(seq, cp, groups.cp().rank(), device);
  torch::Tensor order;
  if (cp > 1) order = cp_gathered_positions(seq, cp, device).argsort();
  const torch::Tensor local_ids = cp > 1 ? ids.index_select(0, positions) : ids;
  if (cp > 1) targets = targets.index_select(0, positions);

  // The model's chunks through the pipeline (one micro-batch, forward only; without pipeline
  // parallelism a single step). The last stage keeps the logits.
  const ModelPart& part = model.part();
  std::vector<std::vector<torch::Tensor>> hidden(static_cast<size_t>(part.num_chunks()));
  torch::Tensor logits;  // [S/cp, b, V/tp] on the last stage
  PipelineStage stage;
  stage.forward = [&](const PipelineOp& op, const torch::Tensor& input) {
    torch::Tensor out = model.forward_chunk(op.chunk, part.has_embedding(op.chunk) ? local_ids : input, positions,
                                            hidden_states ? &hidden[static_cast<size_t>(op.chunk)] : nullptr);
    if (part.has_head(op.chunk)) logits = out;
    return out;
  };
  const int64_t pp = groups.pp().size(), last = pp - 1;
  run_pipeline(plan_pipeline(pp, part.vpp, 1, true)[static_cast<size_t>(groups.pp().rank())], groups.pp(),
               model.stream_shape(seq, local_ids.size(1)), model.stream_options(), stage, true);

  ForwardResult result;
  const double predictions = static_cast<double>(batch * (seq - 1));
  torch::Tensor total = torch::zeros({1}, torch::kDouble);
  const bool has_head = groups.pp().rank() == last;
  if (has_head) {
    const torch::Tensor losses = vocab_parallel_cross_entropy(logits, targets, groups.tp());  // [S/cp, b]
    result.loss = losses.sum() * (mine > 0 ? 1.0 / predictions : 0.0);
    if (pp > 1) result.loss = result.loss.detach();
    total = result.loss.detach().to(torch::kDouble).reshape({1}).cpu();
  }
  groups.dp_cp().all_reduce(total);
  groups.pp().all_reduce(total);  // from the last stage to every stage
  result.loss_value = total.item<double>();

  // Gathered over tp, cp and dp on the stage that holds them, then sent to every stage.
  const auto from_stage = [&](int64_t owner, const std::function<torch::Tensor()>& gather,
                              const std::vector<int64_t>& shape) {
    torch::Tensor out = groups.pp().rank() == owner
                            ? gather()
                            : torch::empty(shape, torch::TensorOptions().dtype(torch::kFloat).device(device));
    if (pp > 1) groups.pp().broadcast(out, static_cast<int>(owner));
    return out;
  };
  result.logits = from_stage(last, [&] {
    return gather_batch(gather_last_dim(logits.detach(), groups.tp()).to(torch::kFloat), groups, false, rows, order);
  }, {batch, seq, model.vocab_size()});
  if (hidden_states) {
    // Hidden state i is the input of layer i (its chunk's stage); the last is the final norm's.
    const int64_t layers = part.chunk_begin.back();
    std::vector<torch::Tensor> mine_in_order;
    for (const auto& chunk : hidden) mine_in_order.insert(mine_in_order.end(), chunk.begin(), chunk.end());
    size_t next = 0;
    for (int64_t i = 0; i <= layers; ++i) {
      const int64_t owner = i < layers ? part.pp_rank_of_layer(i) : last;
      result.hidden_states.push_back(from_stage(owner, [&] {
        const torch::Tensor h = mine_in_order.at(next++).detach().to(torch::kFloat);
        return gather_batch(h, groups, sequence_parallel, rows, order);
      }, {batch, seq, model.hidden_size()}));
    }
  }
  return result;
}

}  // namespace foldtron
