// The language-model task: next-token prediction on windows of seq_length + 1 tokens of the data
// the config names (data/gpt_dataset.h: preprocessed datasets and blends, text read as bytes, or
// synthetic tokens), split into train/valid/test; the loss is the mean next-token cross-entropy
// over every token of the global batch, logged as lm_loss (and as val_loss on the valid split).
#pragma once

#include <memory>

#include "config/config.h"
#include "data/gpt_dataset.h"
#include "data/tokenizer.h"
#include "training/task.h"

namespace foldtron {

class LmTask : public Task {
 public:
  explicit LmTask(const Config& config);

  std::string name() const override { return "lm"; }
  std::string describe() const override { return data_.describe(); }
  int64_t num_samples(Split split) const override;
  Batch batch(Split split, int64_t first, int64_t count, torch::Device device) const override;
  double loss_units(Split split, int64_t first, int64_t count) const override;
  LossTerms loss(const torch::Tensor& logits, const Batch& batch, double units, Communicator& tp,
                 int64_t vocab) const override;
  double flops(int64_t first, int64_t count) const override;
  double tokens(int64_t first, int64_t count) const override;
  // The tokenizer of the data (for the sampled continuation).
  const TextTokenizer& tokenizer() const { return *tokenizer_; }

 private:
  Config config_;
  std::unique_ptr<TextTokenizer> tokenizer_;
  LmCorpus data_;
};

}  // namespace foldtron
