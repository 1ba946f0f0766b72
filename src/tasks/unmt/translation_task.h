// The translation task: one encoder-decoder learns several objectives at once (XLM's recipe for
// unsupervised translation, with the cross-lingual supervision of CUNMT), configured by the
// translation section:
//   ae    denoising auto-encoding: a noised sentence of language L (noise.h) back to itself;
//   bt    online back-translation a-b-a: a sentence of a is translated to b by the current model
//         (greedy or sampled, no gradient, every direction of the global batch decoded together,
//         at most bt_max_len_a * (the longest of those sentences) + bt_max_len_b tokens and
//         max_length - 1), and the model learns to translate that back to the sentence;
//   para  supervised translation a-b on a parallel dataset;
//   mlm   masked language modelling of language L (XLM's pretraining, noise.h's mask_tokens; the
//         mask is the tokenizer's <unk>, which byte fallback keeps out of real text): the encoder
//         alone reads the corrupted sentence and the output layer predicts the original tokens
//         (ModelInputs::encoder_only). It trains in a run of its own (no ae, bt or para), whose
//         validation and test are the masked language modelling loss of their sentences; then
//         foldtron unmt init-decoder copies the encoder into the decoder (XLM's initialization).
// Each enabled objective and direction is a slot; a global batch holds the same number of
// sentences of every slot (sample i of a step is slot i mod slots), drawn from its dataset in an
// order reshuffled each epoch. Each objective's loss is weighted by its lambda at the step
// (a number or a piecewise-linear schedule 'step:value,...'); the loss is the weighted mean
// target-token cross-entropy, and ae_loss, bt_loss, para_loss are logged unweighted. Validation
// and test read their pairs in both directions (the plain translation loss).
//
// Sequences: the source is the sentence's tokens then end-of-sequence, with the source language's
// embedding; the decoder reads the start token (the tokenizer's BOS) then the target, with the
// target language's, and learns the target then end-of-sequence. Each side holds at most
// max_length tokens. Everything is a function of the sample index and the seed, so every layout
// sees the same batches; back-translations come from the model in prepare(), on every rank alike.
#pragma once

#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "config/config.h"
#include "data/indexed_dataset.h"
#include "data/tokenizer.h"
#include "tasks/unmt/noise.h"
#include "training/task.h"

namespace foldtron {

// A weight schedule: "0.5", or "step:value,step:value,..." (linear between, constant outside).
class LambdaSchedule {
 public:
  // ConfigError naming `key` when `text` is neither.
  LambdaSchedule(const std::string& text, const std::string& key);
  double at(int64_t step) const;

 private:
  std::vector<std::pair<int64_t, double>> points_;
};

enum class Objective { kAutoEncode, kBackTranslate, kParallel, kMaskedLM };

class TranslationTask : public Task {
 public:
  explicit TranslationTask(const Config& config);

  std::string name() const override { return "translation"; }
  std::string describe() const override;
  int64_t num_samples(Split split) const override;
  void prepare(Split split, int64_t first, int64_t count, Model& model, ProcessGroups& groups) override;
  Batch batch(Split split, int64_t first, int64_t count, torch::Device device) const override;
  double loss_units(Split split, int64_t first, int64_t count) const override;
  LossTerms loss(const torch::Tensor& logits, const Batch& batch, double units, Communicator& tp,
                 int64_t vocab) const override;
  double flops(int64_t first, int64_t count) const override;
  double tokens(int64_t first, int64_t count) const override;
  std::vector<std::string> metric_names() const override;

  const TextTokenizer& tokenizer() const { return *tokenizer_; }
  // The language id of a language name; ConfigError naming `key` when it is not configured.
  int64_t language_id(const std::string& language, const std::string& key) const;
  // One sample: source and target token ids (no EOS/BOS yet), languages, objective. Masked
  // language modelling: the target is the uncorrupted source, learned where `predict` is set.
  struct Sample {
    std::vector<int64_t> source, target;
    std::vector<bool> predict;
    int64_t source_language = 0, target_language = 0;
    int64_t objective = 0;  // index into metric_names()
    double weight = 1;
  };
  Sample sample(Split split, int64_t index) const;

 private:
  // A slot of the training batch: an objective in one direction, and its dataset(s).
  struct Slot {
    Objective objective;
    std::string name;  // "ae en", "bt en-de-en", "para en-fr"
    int64_t source_language, target_language;  // bt: a and b of a-b-a
    const IndexedDataset* source = nullptr;     // ae/bt: the monolingual dataset; para: the source side
    const IndexedDataset* target = nullptr;     // para: the target side
    int64_t objective_index = 0;
  };
  // Validation or test pairs in one direction.
  struct EvalSet {
    const IndexedDataset* source;
    const IndexedDataset* target;
    int64_t source_language, target_language;
  };

  const IndexedDataset& dataset(const std::string& name);
  void add_slots(Objective objective, const std::string& key, const std::string& value);
  std::vector<EvalSet> eval_sets(const std::string& key, const std::string& value);
  // The tokens of a dataset's sequence without a trailing EOS, cut to max_length - 1.
  std::vector<int64_t> tokens_of(const IndexedDataset& data, int64_t sequence) const;
  // Slot and the slot's running sample number of training sample `index`.
  std::pair<const Slot*, int64_t> slot_of(int64_t index) const;
  // The dataset sequence of a slot's n-th sample (a fresh permutation each epoch).
  int64_t sequence_of(const Slot& slot, int64_t n) const;
  int64_t target_length(Split split, int64_t index) const;  // target tokens + EOS; mlm: predicted tokens
  // The corrupted sentence of masked language modelling, drawn from (seed, split, index).
  Sample masked(Split split, int64_t index, std::vector<int64_t> tokens, int64_t language) const;
  // An encoder-only batch of masked sentences: labels [s, b] only where a token is predicted.
  Batch masked_batch(const std::vector<Sample>& samples, torch::Device device) const;
  // A sequence-to-sequence batch: source + EOS; BOS + target; labels target + EOS.
  Batch pairs_batch(const std::vector<Sample>& samples, torch::Device device) const;
  // Lengths padded to a multiple of 8 and of tp (sequence parallelism splits them over tp).
  int64_t padded_length(size_t tokens) const;
  const std::vector<EvalSet>& sets(Split split) const;
  std::pair<const EvalSet*, int64_t> eval_sample(Split split, int64_t index) const;

  Config config_;
  std::unique_ptr<TextTokenizer> tokenizer_;
  std::vector<std::string> languages_;
  std::map<std::string, std::unique_ptr<IndexedDataset>> datasets_;
  std::vector<Slot> slots_;
  std::vector<Objective> objectives_;  // enabled objectives, in metric order
  std::map<Objective, LambdaSchedule> lambdas_;
  std::vector<EvalSet> valid_, test_;
  std::vector<bool> word_starts_;
  NoiseOptions noise_;
  MaskOptions mask_;
  bool mlm_ = false;  // a masked language modelling run
  int64_t bos_ = 1, eos_ = 2, pad_ = 3;
  // Back-translations of the prepared global batch: sample index -> the generated source.
  std::map<int64_t, std::vector<int64_t>> translations_;
};

}  // namespace foldtron
