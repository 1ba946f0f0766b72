// The language-model task (see lm_task.h).
#include "training/lm_task.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include "core/errors.h"
#include "core/log.h"
#include "layers/embedding.h"
#include "training/flops.h"

namespace foldtron {

namespace {

// The tokenizer, its special tokens checked against the model's vocabulary first.
std::unique_ptr<TextTokenizer> checked_tokenizer(const Config& config) {
  // Synthetic data needs no model file; the sampled continuation then reads bytes.
  std::unique_ptr<TextTokenizer> tokenizer = config.data.mock && config.data.tokenizer_model.empty()
                                                 ? std::make_unique<ByteTokenizer>()
                                                 : make_tokenizer(config.data);
  check_special_tokens(config.data, *tokenizer, config.model.vocab_size);
  return tokenizer;
}

}  // namespace

LmTask::LmTask(const Config& config)
    : config_(config),
      tokenizer_(checked_tokenizer(config)),
      data_(config.data, config.train.seq_length, config.model.vocab_size,
            config.data.mock ? -1 : tokenizer_->vocab_size(), config.train.seed) {
  const TrainConfig& t = config.train;
  if (t.eval_interval <= 0) return;
  // Found now rather than at the first evaluation, hours in.
  const int64_t windows = data_.num_windows(Split::kValid);
  if (windows == 0) {
    throw DataError(fmt::format("the validation split of the data has no window of {} tokens (data.split {})",
                                t.seq_length + 1, config.data.split),
                    "give the second share of data.split more weight, use more (or more) documents, or set "
                    "train.eval_interval: 0");
  }
  if (t.eval_iters * t.global_batch_size > windows) {
    log::warning("train", "an evaluation reads {} samples, but the validation split has {} windows: some are read "
                          "more than once",
                 t.eval_iters * t.global_batch_size, windows);
  }
}

int64_t LmTask::num_samples(Split split) const { return data_.num_windows(split); }

Batch LmTask::batch(Split split, int64_t first, int64_t count, torch::Device device) const {
  const int64_t s = config_.train.seq_length;
  const torch::Tensor tokens = data_.batch(split, first, count).t().contiguous().to(device);  // [s + 1, b]
  Batch batch;
  batch.inputs.input_ids = tokens.narrow(0, 0, s);
  batch.inputs.positions = torch::arange(s, torch::TensorOptions().dtype(torch::kLong).device(device));
  batch.labels = tokens.narrow(0, 1, s);
  return batch;
}

double LmTask::loss_units(Split /*split*/, int64_t /*first*/, int64_t count) const {
  return static_cast<double>(count * config_.train.seq_length);
}

LossTerms LmTask::loss(const torch::Tensor& logits, const Batch& batch, double units, Communicator& tp,
                       int64_t vocab) const {
  const torch::Tensor loss = vocab_parallel_cross_entropy(logits, batch.labels, tp, vocab).sum() / units;
  return {loss, {}};
}

double LmTask::flops(int64_t /*first*/, int64_t count) const {
  return flops_per_step(config_, count, config_.train.seq_length);
}

double LmTask::tokens(int64_t /*first*/, int64_t count) const {
  return static_cast<double>(count * config_.train.seq_length);
}

}  // namespace foldtron
