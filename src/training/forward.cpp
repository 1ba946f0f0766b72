// Forward of a batch in any layout (see forward.h).
#include "training/forward.h"

#include <functional>

#include <fmt/format.h>
#include <torch/torch.h>

#include "core/errors.h"
#include "core/text.h"
#include "layers/context_parallel.h"
#include "layers/embedding.h"
#include "models/model.h"
#include "parallel/mappings.h"
#include "parallel/process_groups.h"
#include "pipeline/schedule.h"

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

// Checks what the model and the layout need of the inputs.
void check_inputs(const Model& model, ProcessGroups& groups, const ForwardInputs& in) {
  const auto length_fits = [&](int64_t length, const char* what) {
    const int64_t tp = groups.tp().size(), cp = groups.cp().size();
    if (model.context().sequence_parallel && length % tp != 0) {
      throw DataError(fmt::format("the {} length {} does not split over tp {} with sequence parallelism", what, length, tp),
                      "pad the input to a multiple of tp, or run without --sequence-parallel");
    }
    if (cp > 1 && (length % (2 * cp) != 0 || (model.context().sequence_parallel && length % (cp * tp) != 0))) {
      throw DataError(fmt::format("the {} length {} does not split into 2*cp = {} chunks{}", what, length, 2 * cp,
                                  model.context().sequence_parallel ? fmt::format(" and over tp*cp = {}", cp * tp) : ""),
                      "pad the input to a multiple of those, or run with a smaller --cp");
    }
  };
  length_fits(in.input_ids.size(1), "input");
  if (in.attention_mask.defined() && in.attention_mask.sizes() != in.input_ids.sizes()) {
    throw DataError(fmt::format("attention_mask has shape {}, but input_ids {}", shape_text(in.attention_mask.sizes().vec()),
                                shape_text(in.input_ids.sizes().vec())),
                    "give attention_mask the shape of input_ids");
  }
  if (groups.cp().size() > 1 && in.attention_mask.defined() && !in.attention_mask.all().item<bool>()) {
    throw DataError("attention_mask with padding runs without context parallelism",
                    "run with --cp 1, or pass unpadded sequences");
  }
  if (!model.encoder_decoder()) return;
  if (!in.decoder_input_ids.defined() || !in.labels.defined()) {
    throw DataError("an encoder-decoder model needs decoder_input_ids and labels beside input_ids",
                    "store decoder_input_ids and labels, int64 [batch, target length]");
  }
  if (in.decoder_input_ids.sizes() != in.labels.sizes() || in.decoder_input_ids.size(0) != in.input_ids.size(0)) {
    throw DataError(fmt::format("decoder_input_ids {} and labels {} must both be [batch {}, target length]",
                                shape_text(in.decoder_input_ids.sizes().vec()), shape_text(in.labels.sizes().vec()),
                                in.input_ids.size(0)),
                    "write them with the same shape, one row per input sequence");
  }
  length_fits(in.decoder_input_ids.size(1), "target");
}

// This dp rank's share of the batch (contiguous rows, sizes differing by at most one) as the
// model reads it, with its next-token or label targets. A rank without rows runs row 0 and weighs
// it 0.
struct Share {
  std::vector<int64_t> rows;  // per dp rank
  int64_t mine = 0;
  ModelInputs inputs;
  torch::Tensor targets;  // [S/cp or T, b]
  double count = 1;       // the targets of the whole batch
  torch::Tensor order;    // cp > 1: puts gathered chunks back in position order
};

Share share_batch(const Model& model, ProcessGroups& groups, const ForwardInputs& in) {
  const torch::Device device = model.context().device;
  const int64_t batch = in.input_ids.size(0), seq = in.input_ids.size(1), dp = groups.dp().size();
  Share out;
  for (int64_t d = 0; d < dp; ++d) out.rows.push_back(batch / dp + (d < batch % dp ? 1 : 0));
  const int64_t d = groups.dp().rank();
  out.mine = out.rows[static_cast<size_t>(d)];
  int64_t first = 0;
  for (int64_t r = 0; r < d; ++r) first += out.rows[static_cast<size_t>(r)];
  const auto share = [&](const torch::Tensor& x) {  // [B, L] -> [L, b] on the device
    return x.narrow(0, out.mine > 0 ? first : 0, std::max<int64_t>(out.mine, 1)).t().contiguous().to(device);
  };
  ModelInputs& inputs = out.inputs;
  inputs.input_ids = share(in.input_ids);  // [S, b]
  if (in.attention_mask.defined()) inputs.mask = share(in.attention_mask).to(torch::kBool);
  if (in.languages.defined()) inputs.languages = share(in.languages.unsqueeze(1)).squeeze(0);
  torch::Tensor predictions;
  if (model.encoder_decoder()) {
    inputs.decoder_input_ids = share(in.decoder_input_ids);
    if (in.decoder_languages.defined()) inputs.decoder_languages = share(in.decoder_languages.unsqueeze(1)).squeeze(0);
    out.targets = share(in.labels);
    predictions = (in.labels != kIgnoreIndex).sum();
  } else {
    // Next token; the last position predicts nothing, nor does a position that is padding or
    // whose next token is.
    out.targets = torch::full_like(inputs.input_ids, kIgnoreIndex);
    out.targets.narrow(0, 0, seq - 1).copy_(inputs.input_ids.narrow(0, 1, seq - 1));
    const torch::Tensor tokens = in.attention_mask.defined() ? in.attention_mask != 0
                                                             : torch::ones(in.input_ids.sizes(), torch::kBool);
    const torch::Tensor counted = tokens.narrow(1, 0, seq - 1).logical_and(tokens.narrow(1, 1, seq - 1));  // [B, S-1]
    predictions = counted.sum();
    if (inputs.mask.defined()) {
      out.targets.narrow(0, 0, seq - 1).masked_fill_(share(counted).logical_not(), kIgnoreIndex);
    }
  }
  out.count = std::max<double>(static_cast<double>(predictions.item<int64_t>()), 1.0);
  // Context parallelism (decoder-only, no padding): this rank's chunks.
  const int64_t cp = groups.cp().size();
  inputs.positions = cp_positions(seq, cp, groups.cp().rank(), device);
  if (cp > 1) {
    out.order = cp_gathered_positions(seq, cp, device).argsort();
    inputs.input_ids = inputs.input_ids.index_select(0, inputs.positions);
    out.targets = out.targets.index_select(0, inputs.positions);
  }
  return out;
}

// The logits and hidden states on every rank: gathered over tp, cp and dp on the stage that holds
// them, then sent to every stage.
void gather_outputs(Model& model, ProcessGroups& groups, const ForwardInputs& in, const Share& share,
                    const torch::Tensor& logits, const std::vector<torch::Tensor>& hidden, bool hidden_states,
                    ForwardResult& result) {
  const torch::Device device = model.context().device;
  const int64_t batch = in.input_ids.size(0), seq = in.input_ids.size(1), pp = groups.pp().size();
  const auto from_stage = [&](int64_t owner, const std::function<torch::Tensor()>& gather,
                              const std::vector<int64_t>& shape) {
    torch::Tensor out = groups.pp().rank() == owner
                            ? gather()
                            : torch::empty(shape, torch::TensorOptions().dtype(torch::kFloat).device(device));
    if (pp > 1) groups.pp().broadcast(out, static_cast<int>(owner));
    return out;
  };
  const int64_t out_seq = model.encoder_decoder() ? in.decoder_input_ids.size(1) : seq, vocab = model.vocab_size();
  result.logits = from_stage(pp - 1, [&] {
    const torch::Tensor full = gather_last_dim(logits.detach(), groups.tp()).narrow(-1, 0, vocab);
    return gather_batch(full.to(torch::kFloat), groups, false, share.rows, share.order);
  }, {batch, out_seq, vocab});
  if (!hidden_states) return;
  // Each rank captured its states in order; state i lives on hidden_state_owner(i).
  const int64_t encoder_states = model.num_encoder_states();
  size_t next = 0;
  for (int64_t i = 0; i < model.num_hidden_states(); ++i) {
    const int64_t length = i < encoder_states ? seq : out_seq;
    result.hidden_states.push_back(from_stage(model.hidden_state_owner(i), [&] {
      const torch::Tensor h = hidden.at(next++).detach().to(torch::kFloat);
      return gather_batch(h, groups, model.context().sequence_parallel, share.rows, share.order);
    }, {batch, length, model.hidden_size()}));
  }
}

}  // namespace

ForwardResult forward_batch(Model& model, ProcessGroups& groups, const ForwardInputs& in_given, bool hidden_states,
                            bool backward) {
  check_inputs(model, groups, in_given);
  ForwardInputs in = in_given;
  // An all-ones mask is no padding: the plain causal kernels (and context parallelism) then run.
  if (in.attention_mask.defined() && (in.attention_mask != 0).all().item<bool>()) in.attention_mask = torch::Tensor();
  FT_CHECK(!backward || model.part().vpp == 1, "forward_batch runs backward with one micro-batch: not interleaved");
  const Share share = share_batch(model, groups, in);
  const double weight = share.mine > 0 ? 1.0 / share.count : 0.0;
  // Router losses (in training mode): each dp rank's share of the batch's, none for a dummy row.
  model.set_router_loss_scale(share.mine > 0 ? 1.0 / static_cast<double>(groups.dp().size()) : 0.0);

  // The model's chunks through the pipeline (one micro-batch; without pipeline parallelism a
  // single step). The last stage keeps the logits and the loss, this rank's share of the mean.
  const ModelPart& part = model.part();
  std::vector<torch::Tensor> hidden;
  torch::Tensor logits;  // [S/cp or T, b, Vp/tp] on the last stage
  ForwardResult result;
  PipelineStage stage;
  stage.forward = [&](const PipelineOp& op, const TensorList& input) -> TensorList {
    ForwardState state;
    state.hidden_states = hidden_states ? &hidden : nullptr;
    TensorList out = model.forward_chunk(op.chunk, share.inputs, input, state);
    if (!part.has_head(op.chunk)) return out;
    logits = out.at(0);
    const torch::Tensor loss =
        vocab_parallel_cross_entropy(logits, share.targets, groups.tp(), model.vocab_size()).sum() * weight;
    result.loss = loss.detach();
    return {loss};
  };
  stage.stream_spec = [&](int64_t /*micro*/) { return model.stream_spec(share.inputs); };
  const int64_t pp = groups.pp().size();
  run_pipeline(plan_pipeline(pp, part.vpp, 1, !backward)[static_cast<size_t>(groups.pp().rank())], groups.pp(), stage,
               !backward);
  torch::Tensor total = torch::zeros({1}, torch::kDouble);
  if (part.is_last_stage()) total = result.loss.to(torch::kDouble).reshape({1}).cpu();
  groups.dp_cp().all_reduce(total);
  groups.pp().all_reduce(total);  // from the last stage to every stage
  result.loss_value = total.item<double>();
  gather_outputs(model, groups, in, share, logits, hidden, hidden_states, result);
  return result;
}

}  // namespace foldtron
