// The translation task (see translation_task.h).
#include "tasks/unmt/translation_task.h"

#include <cmath>

#include <algorithm>
#include <filesystem>
#include <numeric>

#include <fmt/format.h>
#include <torch/torch.h>

#include "core/checksum.h"
#include "core/errors.h"
#include "core/log.h"
#include "core/text.h"
#include "generation/generate.h"
#include "layers/embedding.h"
#include "parallel/process_groups.h"
#include "tasks/unmt/translate.h"
#include "training/flops.h"

namespace foldtron {
namespace {

namespace fs = std::filesystem;

const char* objective_name(Objective objective) {
  switch (objective) {
    case Objective::kAutoEncode:
      return "ae";
    case Objective::kBackTranslate:
      return "bt";
    case Objective::kParallel:
      return "para";
    case Objective::kMaskedLM:
      return "mlm";
  }
  return "?";
}

std::vector<std::string> words_of(const std::string& text) {
  std::vector<std::string> out;
  for (const std::string& word : split(text, ' ')) {
    if (!word.empty()) out.push_back(word);
  }
  return out;
}

// "a=b c=d" -> {a: b, c: d}; ConfigError naming `key` for an item without '='.
std::map<std::string, std::string> assignments(const std::string& text, const std::string& key) {
  std::map<std::string, std::string> out;
  for (const std::string& item : words_of(text)) {
    const size_t eq = item.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == item.size()) {
      throw ConfigError(key, fmt::format("'{}' is not of the form name=dataset", item),
                        "write e.g. 'en=train.en de=train.de'");
    }
    out[item.substr(0, eq)] = item.substr(eq + 1);
  }
  return out;
}

uint64_t mix(uint64_t a, uint64_t b) {
  Checksum sum;
  sum.update(&a, sizeof(a));
  sum.update(&b, sizeof(b));
  return sum.value();
}

// A permutation of [0, n) evaluated one index at a time: a four-round Feistel network over the
// smallest even number of bits covering n, walked until the value falls below n.
int64_t permute(int64_t index, int64_t n, uint64_t key) {
  int bits = 2;
  while ((int64_t{1} << bits) < n) bits += 2;
  const int half = bits / 2;
  const uint64_t mask = (uint64_t{1} << half) - 1;
  uint64_t x = static_cast<uint64_t>(index);
  do {
    uint64_t left = x >> half, right = x & mask;
    for (uint64_t round = 0; round < 4; ++round) {
      const uint64_t next = left ^ (mix(key + round, right) & mask);
      left = right;
      right = next;
    }
    x = (left << half) | right;
  } while (x >= static_cast<uint64_t>(n));
  return static_cast<int64_t>(x);
}

uint64_t name_hash(const std::string& name) {
  Checksum sum;
  sum.update(name.data(), name.size());
  return sum.value();
}

int64_t round_up(int64_t value, int64_t multiple) { return (value + multiple - 1) / multiple * multiple; }

}  // namespace

// ---- LambdaSchedule ----

LambdaSchedule::LambdaSchedule(const std::string& text, const std::string& key) {
  const auto number = [&](const std::string& part) {
    size_t used = 0;
    double value = 0;
    try {
      value = std::stod(part, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != part.size() || part.empty()) {
      throw ConfigError(key, fmt::format("'{}' is not a number (in '{}')", part, text),
                        "write a weight like 1 or a schedule like '0:1,100000:0.1,300000:0'");
    }
    return value;
  };
  for (const std::string& part : split(text, ',')) {
    const size_t colon = part.find(':');
    if (colon == std::string::npos) {
      if (!points_.empty() || text.find(',') != std::string::npos) {
        throw ConfigError(key, fmt::format("'{}' in '{}' has no step", part, text),
                          "write each point as step:value, e.g. '0:1,100000:0.1'");
      }
      points_.emplace_back(0, number(part));
      continue;
    }
    const double step = number(part.substr(0, colon));
    if (!points_.empty() && step <= static_cast<double>(points_.back().first)) {
      throw ConfigError(key, fmt::format("the steps of '{}' do not increase", text), "list the points in step order");
    }
    points_.emplace_back(static_cast<int64_t>(step), number(part.substr(colon + 1)));
  }
  if (points_.empty()) throw ConfigError(key, "an empty weight", "write a number such as 1");
}

double LambdaSchedule::at(int64_t step) const {
  if (step <= points_.front().first) return points_.front().second;
  for (size_t i = 1; i < points_.size(); ++i) {
    const auto& [s1, v1] = points_[i];
    if (step < s1) {
      const auto& [s0, v0] = points_[i - 1];
      return v0 + (v1 - v0) * static_cast<double>(step - s0) / static_cast<double>(s1 - s0);
    }
  }
  return points_.back().second;
}

// ---- TranslationTask ----

TranslationTask::TranslationTask(const Config& config) : config_(config) {
  const TranslationConfig& t = config.translation;
  const ModelConfig& m = config.model;
  if (!m.encoder_decoder()) {
    throw ConfigError("translation.data", fmt::format("the translation task trains an encoder-decoder, not '{}'",
                                                      enum_name(m.architecture)),
                      "set model.architecture: marian (with XLM-style options), or leave translation.data empty");
  }
  if (config.data.tokenizer != Tokenizer::kSentencePiece) {
    throw ConfigError("data.tokenizer", "the translation task reads sentencepiece-tokenized datasets",
                      "set data.tokenizer: sentencepiece and data.tokenizer_model to the model the data was "
                      "preprocessed with");
  }
  tokenizer_ = make_tokenizer(config.data);
  check_special_tokens(config.data, *tokenizer_, m.vocab_size);
  bos_ = tokenizer_->bos_id();
  eos_ = tokenizer_->eos_id();
  pad_ = tokenizer_->pad_id();
  if (bos_ < 0 || eos_ < 0 || pad_ < 0) {
    throw ConfigError("data.tokenizer_model", fmt::format("the translation task needs BOS, EOS and padding ids; '{}' "
                                                          "has bos {}, eos {}, pad {}",
                                                          config.data.tokenizer_model, bos_, eos_, pad_),
                      "train the tokenizer with foldtron tokenizer train (ids unk 0, bos 1, eos 2, pad 3)");
  }
  if (m.pad_token_id != pad_) {
    throw ConfigError("model.pad_token_id", fmt::format("is {}, the tokenizer's padding id is {}", m.pad_token_id, pad_),
                      fmt::format("set model.pad_token_id: {}", pad_));
  }
  if (m.decoder_start_token_id != bos_) {
    throw ConfigError("model.decoder_start_token_id",
                      fmt::format("is {}, and the task starts the decoder with the tokenizer's BOS {}",
                                  m.decoder_start_token_id, bos_),
                      fmt::format("set model.decoder_start_token_id: {}", bos_));
  }
  languages_ = words_of(t.languages);
  if (languages_.empty()) throw ConfigError("translation.languages", "no languages", "write e.g. 'en de fr'");
  if (static_cast<int64_t>(languages_.size()) > m.num_languages) {
    throw ConfigError("model.num_languages",
                      fmt::format("is {}, and translation.languages names {}", m.num_languages, languages_.size()),
                      fmt::format("set model.num_languages: {}", languages_.size()));
  }
  if (t.max_length < 2) throw ConfigError("translation.max_length", "must be at least 2", "set e.g. 100");
  if (t.max_length > m.max_position_embeddings) {
    throw ConfigError("translation.max_length",
                      fmt::format("{} tokens exceed model.max_position_embeddings ({})", t.max_length,
                                  m.max_position_embeddings),
                      "raise model.max_position_embeddings or lower translation.max_length");
  }
  for (const auto& [key, value] : {std::pair{"translation.word_dropout", t.word_dropout},
                                   std::pair{"translation.word_blank", t.word_blank}}) {
    if (!(value >= 0 && value < 1)) {
      throw ConfigError(key, fmt::format("{} is not a probability below 1", value), "use a value in [0, 1), e.g. 0.1");
    }
  }
  if (t.word_shuffle < 0) throw ConfigError("translation.word_shuffle", "is negative", "use 0 (off) or e.g. 3");
  if (t.bt_temperature < 0) throw ConfigError("translation.bt_temperature", "is negative", "use 0 (greedy) or e.g. 1");
  if (!(t.bt_max_len_a > 0) || t.bt_max_len_b < 0) {
    throw ConfigError("translation.bt_max_len_a",
                      fmt::format("a = {}, b = {}: back-translations need room to grow", t.bt_max_len_a, t.bt_max_len_b),
                      "use a > 0 and b >= 0, e.g. 1.3 and 5");
  }
  word_starts_ = word_starts(*tokenizer_);
  noise_ = {t.word_shuffle, t.word_dropout, t.word_blank, tokenizer_->unk_id() >= 0 ? tokenizer_->unk_id() : 0};
  add_slots(Objective::kAutoEncode, "translation.ae", t.ae);
  add_slots(Objective::kBackTranslate, "translation.bt", t.bt);
  add_slots(Objective::kParallel, "translation.para", t.para);
  const bool translating = !slots_.empty();
  add_slots(Objective::kMaskedLM, "translation.mlm", t.mlm);
  mlm_ = !t.mlm.empty() && !words_of(t.mlm).empty();
  if (mlm_ && translating) {
    throw ConfigError("translation.mlm",
                      "masked language modelling pretrains the encoder alone (XLM's first stage) and cannot share a "
                      "run with ae, bt or para",
                      "pretrain in a run of its own (ae, bt and para empty), then foldtron unmt init-decoder --load "
                      "MLM_CKPT --output DIR and train the translation objectives with checkpoint.load: DIR");
  }
  if (slots_.empty()) {
    throw ConfigError("translation.ae", "no objective is enabled (translation.ae, bt, para and mlm are all empty)",
                      "enable at least one, e.g. ae: 'en de' and bt: 'en-de-en de-en-de'");
  }
  if (!(t.mlm_probability > 0 && t.mlm_probability <= 1)) {
    throw ConfigError("translation.mlm_probability", fmt::format("{} is not a probability in (0, 1]", t.mlm_probability),
                      "use e.g. 0.15");
  }
  mask_ = {t.mlm_probability, noise_.blank_id, std::max({bos_, eos_, pad_, noise_.blank_id}) + 1,
           tokenizer_->vocab_size()};
  lambdas_.emplace(Objective::kAutoEncode, LambdaSchedule(t.ae_lambda, "translation.ae_lambda"));
  lambdas_.emplace(Objective::kBackTranslate, LambdaSchedule(t.bt_lambda, "translation.bt_lambda"));
  lambdas_.emplace(Objective::kParallel, LambdaSchedule(t.para_lambda, "translation.para_lambda"));
  lambdas_.emplace(Objective::kMaskedLM, LambdaSchedule("1", "translation.mlm"));
  const int64_t n = static_cast<int64_t>(slots_.size());
  if (config.train.global_batch_size % n != 0) {
    throw ConfigError("train.global_batch_size",
                      fmt::format("{} does not split evenly over the {} objective slots ({})",
                                  config.train.global_batch_size, n,
                                  join([&] {
                                    std::vector<std::string> names;
                                    for (const Slot& s : slots_) names.push_back(s.name);
                                    return names;
                                  }(), ", ")),
                      fmt::format("use a multiple of {}", n));
  }
  valid_ = eval_sets("translation.valid", t.valid);
  test_ = eval_sets("translation.test", t.test);
  if (config.train.eval_interval > 0 && valid_.empty()) {
    throw ConfigError("translation.valid", "train.eval_interval asks for validation, and no validation pairs are set",
                      "set translation.valid (e.g. 'en-de=dev.catalogs') or train.eval_interval: 0");
  }
}

const IndexedDataset& TranslationTask::dataset(const std::string& name) {
  auto it = datasets_.find(name);
  if (it != datasets_.end()) return *it->second;
  const std::string prefix = (fs::path(config_.translation.data) / name).string();
  if (!fs::exists(prefix + ".bin") || !fs::exists(prefix + ".idx")) {
    throw DataError(fmt::format("the dataset '{}' ({}.bin/.idx) does not exist", name, prefix),
                    fmt::format("preprocess the corpus file: foldtron preprocess --input {0} --tokenizer {1} "
                                "--output-prefix {2} (scripts/unmt_data.sh does every file)",
                                name, config_.data.tokenizer_model, prefix));
  }
  auto data = std::make_unique<IndexedDataset>(prefix);
  if (data->num_sequences() == 0) {
    throw DataError(fmt::format("the dataset '{}' holds no sentences", prefix), "check the corpus file it was made of");
  }
  return *datasets_.emplace(name, std::move(data)).first->second;
}

int64_t TranslationTask::language_id(const std::string& language, const std::string& key) const {
  return language_index(config_.translation, language, key);
}

void TranslationTask::add_slots(Objective objective, const std::string& key, const std::string& value) {
  const TranslationConfig& t = config_.translation;
  const auto mono = assignments(t.mono, "translation.mono");
  const auto parallel = assignments(t.parallel, "translation.parallel");
  bool added = false;
  for (const std::string& item : words_of(value)) {
    const std::vector<std::string> langs = split(item, '-');
    Slot slot{objective, fmt::format("{} {}", objective_name(objective), item), 0, 0};
    const auto mono_of = [&](const std::string& language) -> const IndexedDataset& {
      const auto it = mono.find(language);
      if (it == mono.end()) {
        throw ConfigError(key, fmt::format("'{}' needs monolingual {} data, and translation.mono names none", item,
                                           language),
                          fmt::format("add '{}=DATASET' to translation.mono", language));
      }
      return dataset(it->second);
    };
    if (objective == Objective::kAutoEncode || objective == Objective::kMaskedLM) {
      if (langs.size() != 1) throw ConfigError(key, fmt::format("'{}' is not a language", item), "write e.g. 'en de'");
      slot.source_language = slot.target_language = language_id(item, key);
      slot.source = &mono_of(item);
    } else if (objective == Objective::kBackTranslate) {
      if (langs.size() != 3 || langs[0] != langs[2] || langs[0] == langs[1]) {
        throw ConfigError(key, fmt::format("'{}' is not a direction a-b-a", item), "write e.g. 'en-de-en de-en-de'");
      }
      slot.source_language = language_id(langs[0], key);
      slot.target_language = language_id(langs[1], key);
      slot.source = &mono_of(langs[0]);
    } else {
      if (langs.size() != 2 || langs[0] == langs[1]) {
        throw ConfigError(key, fmt::format("'{}' is not a direction a-b", item), "write e.g. 'en-fr fr-en'");
      }
      slot.source_language = language_id(langs[0], key);
      slot.target_language = language_id(langs[1], key);
      auto it = parallel.find(langs[0] + "-" + langs[1]);
      if (it == parallel.end()) it = parallel.find(langs[1] + "-" + langs[0]);
      if (it == parallel.end()) {
        throw ConfigError(key, fmt::format("'{}' needs {}-{} parallel data, and translation.parallel names none", item,
                                           langs[0], langs[1]),
                          fmt::format("add '{}-{}=NAME' to translation.parallel (NAME.{} and NAME.{})", langs[0],
                                      langs[1], langs[0], langs[1]));
      }
      slot.source = &dataset(it->second + "." + langs[0]);
      slot.target = &dataset(it->second + "." + langs[1]);
      if (slot.source->num_sequences() != slot.target->num_sequences()) {
        throw DataError(fmt::format("the parallel datasets {0}.{1} and {0}.{2} hold {3} and {4} sentences", it->second,
                                    langs[0], langs[1], slot.source->num_sequences(), slot.target->num_sequences()),
                        "preprocess both sides of the pair from line-aligned files");
      }
    }
    if (!added) objectives_.push_back(objective);
    added = true;
    slot.objective_index = static_cast<int64_t>(objectives_.size()) - 1;
    slots_.push_back(slot);
  }
}

std::vector<TranslationTask::EvalSet> TranslationTask::eval_sets(const std::string& key, const std::string& value) {
  std::vector<EvalSet> out;
  for (const auto& [pair, name] : assignments(value, key)) {
    const std::vector<std::string> langs = split(pair, '-');
    if (langs.size() != 2) throw ConfigError(key, fmt::format("'{}' is not a pair l1-l2", pair), "write e.g. en-de");
    const int64_t a = language_id(langs[0], key), b = language_id(langs[1], key);
    const IndexedDataset& first = dataset(name + "." + langs[0]);
    const IndexedDataset& second = dataset(name + "." + langs[1]);
    if (first.num_sequences() != second.num_sequences()) {
      throw DataError(fmt::format("the pairs {0}.{1} and {0}.{2} hold {3} and {4} sentences", name, langs[0], langs[1],
                                  first.num_sequences(), second.num_sequences()),
                      "preprocess both sides from line-aligned files");
    }
    out.push_back({&first, &second, a, b});
    out.push_back({&second, &first, b, a});
  }
  return out;
}

std::string TranslationTask::describe() const {
  std::vector<std::string> parts;
  for (const Slot& slot : slots_) {
    parts.push_back(fmt::format("{} ({} sentences)", slot.name, slot.source->num_sequences()));
  }
  int64_t valid = 0;
  for (const EvalSet& set : valid_) valid += set.source->num_sequences();
  return fmt::format("translation: {}; validation {} pairs in {} directions; {}", join(parts, ", "), valid / 2,
                     valid_.size(), tokenizer_->describe());
}

int64_t TranslationTask::num_samples(Split split) const {
  if (split == Split::kTrain) {
    int64_t total = 0;
    for (const Slot& slot : slots_) total += slot.source->num_sequences();
    return total;
  }
  int64_t total = 0;
  for (const EvalSet& set : sets(split)) total += set.source->num_sequences();
  return total;
}

const std::vector<TranslationTask::EvalSet>& TranslationTask::sets(Split split) const {
  return split == Split::kTest ? test_ : valid_;
}

std::vector<int64_t> TranslationTask::tokens_of(const IndexedDataset& data, int64_t sequence) const {
  std::vector<int64_t> tokens = data.sequence(sequence);
  if (!tokens.empty() && tokens.back() == eos_) tokens.pop_back();
  const size_t limit = static_cast<size_t>(config_.translation.max_length - 1);
  if (tokens.size() > limit) tokens.resize(limit);
  return tokens;
}

std::pair<const TranslationTask::Slot*, int64_t> TranslationTask::slot_of(int64_t index) const {
  const int64_t gbs = config_.train.global_batch_size, n = static_cast<int64_t>(slots_.size());
  const int64_t step = index / gbs, position = index % gbs;
  return {&slots_[static_cast<size_t>(position % n)], step * (gbs / n) + position / n};
}

int64_t TranslationTask::sequence_of(const Slot& slot, int64_t n) const {
  const int64_t size = slot.source->num_sequences();
  const uint64_t key = mix(mix(static_cast<uint64_t>(config_.train.seed), name_hash(slot.name)),
                           static_cast<uint64_t>(n / size));
  return permute(n % size, size, key);
}

std::pair<const TranslationTask::EvalSet*, int64_t> TranslationTask::eval_sample(Split split, int64_t index) const {
  const std::vector<EvalSet>& list = sets(split);
  const int64_t total = num_samples(split);
  FT_CHECK(total > 0, "no samples in the split (checked before)");
  int64_t i = index % total;
  for (const EvalSet& set : list) {
    if (i < set.source->num_sequences()) return {&set, i};
    i -= set.source->num_sequences();
  }
  FT_CHECK(false, "sample index past the sets");
  return {nullptr, 0};
}

TranslationTask::Sample TranslationTask::sample(Split split, int64_t index) const {
  Sample out;
  if (split != Split::kTrain) {
    const auto [set, i] = eval_sample(split, index);
    if (mlm_) return masked(split, index, tokens_of(*set->source, i), set->source_language);
    out.source = tokens_of(*set->source, i);
    out.target = tokens_of(*set->target, i);
    out.source_language = set->source_language;
    out.target_language = set->target_language;
    return out;
  }
  const auto [slot, n] = slot_of(index);
  const int64_t sequence = sequence_of(*slot, n);
  out.objective = slot->objective_index;
  out.weight = lambdas_.at(slot->objective).at(index / config_.train.global_batch_size);
  switch (slot->objective) {
    case Objective::kAutoEncode: {
      out.target = tokens_of(*slot->source, sequence);
      std::mt19937_64 rng(mix(static_cast<uint64_t>(config_.train.seed), static_cast<uint64_t>(index)));
      out.source = add_noise(out.target, word_starts_, noise_, rng);
      out.source_language = out.target_language = slot->source_language;
      break;
    }
    case Objective::kBackTranslate: {
      out.target = tokens_of(*slot->source, sequence);
      const auto it = translations_.find(index);
      if (it == translations_.end()) {
        throw InternalError(fmt::format("training sample {} is a back-translation that prepare() did not make", index));
      }
      out.source = it->second;
      out.source_language = slot->target_language;  // the sentence was translated into b ...
      out.target_language = slot->source_language;  // ... and is learned back into a
      break;
    }
    case Objective::kParallel:
      out.source = tokens_of(*slot->source, sequence);
      out.target = tokens_of(*slot->target, sequence);
      out.source_language = slot->source_language;
      out.target_language = slot->target_language;
      break;
    case Objective::kMaskedLM: {
      Sample x = masked(split, index, tokens_of(*slot->source, sequence), slot->source_language);
      x.objective = out.objective;
      x.weight = out.weight;
      return x;
    }
  }
  return out;
}

TranslationTask::Sample TranslationTask::masked(Split split, int64_t index, std::vector<int64_t> tokens,
                                                int64_t language) const {
  std::mt19937_64 rng(mix(mix(static_cast<uint64_t>(config_.train.seed), static_cast<uint64_t>(split)),
                          static_cast<uint64_t>(index)));
  MaskedTokens corrupted = mask_tokens(tokens, mask_, rng);
  Sample out;
  out.source = std::move(corrupted.input);
  out.target = std::move(tokens);
  out.predict = std::move(corrupted.predict);
  out.source_language = out.target_language = language;
  return out;
}

void TranslationTask::prepare(Split split, int64_t first, int64_t count, Model& model, ProcessGroups& groups) {
  translations_.clear();
  if (split != Split::kTrain) return;
  const TranslationConfig& t = config_.translation;
  // Every back-translation of the global batch in one decoding (each row with its languages):
  // decoding is host-bound, so one batch of all directions costs about what one direction does.
  std::vector<int64_t> indices, from, to;
  std::vector<std::vector<int64_t>> sources;
  size_t longest = 0;
  for (int64_t i = first; i < first + count; ++i) {
    const auto [slot, n] = slot_of(i);
    if (slot->objective != Objective::kBackTranslate) continue;
    indices.push_back(i);
    from.push_back(slot->source_language);
    to.push_back(slot->target_language);
    std::vector<int64_t> tokens = tokens_of(*slot->source, sequence_of(*slot, n));
    tokens.push_back(eos_);
    longest = std::max(longest, tokens.size());
    sources.push_back(std::move(tokens));
  }
  if (indices.empty()) return;
  GenerationOptions options;
  // a * (the batch's longest source) + b new tokens, at most what a training source holds.
  options.max_new_tokens = std::min<int64_t>(
      t.max_length - 1, static_cast<int64_t>(std::floor(t.bt_max_len_a * static_cast<double>(longest))) + t.bt_max_len_b);
  options.eos_token_ids = {eos_};
  options.pad_token_id = pad_;
  options.decoder_start_token_id = bos_;
  options.source_languages = torch::tensor(from, torch::kLong);
  options.target_languages = torch::tensor(to, torch::kLong);
  options.do_sample = t.bt_temperature > 0;
  options.temperature = t.bt_temperature > 0 ? t.bt_temperature : 1.0;
  options.seed = mix(static_cast<uint64_t>(config_.train.seed), static_cast<uint64_t>(first));
  std::vector<std::vector<int64_t>> decoded = decode_sources(model, groups, sources, options);
  for (size_t r = 0; r < decoded.size(); ++r) translations_[indices[r]] = std::move(decoded[r]);
}

int64_t TranslationTask::padded_length(size_t tokens) const {
  const int64_t multiple = std::lcm(int64_t{8}, config_.parallel.tp);
  return round_up(std::max<int64_t>(1, static_cast<int64_t>(tokens)), multiple);
}

Batch TranslationTask::batch(Split split, int64_t first, int64_t count, torch::Device device) const {
  std::vector<Sample> samples;
  for (int64_t i = first; i < first + count; ++i) samples.push_back(sample(split, i));
  Batch batch = mlm_ ? masked_batch(samples, device) : pairs_batch(samples, device);
  // Each objective's target tokens in the sample's whole global batch (the metrics' denominators).
  const int64_t gbs = config_.train.global_batch_size, global = first - first % gbs;
  std::vector<double> units(std::max<size_t>(objectives_.size(), 1), 0.0);
  if (split == Split::kTrain) {
    for (int64_t i = global; i < global + gbs; ++i) {
      const auto [slot, n] = slot_of(i);
      units[static_cast<size_t>(slot->objective_index)] += static_cast<double>(target_length(split, i));
    }
  }
  batch.objective_units = torch::tensor(units, torch::kDouble).to(device);
  const int64_t b = static_cast<int64_t>(samples.size());
  torch::Tensor objectives = torch::empty({b}, torch::kLong), weights = torch::empty({b}, torch::kFloat);
  for (int64_t r = 0; r < b; ++r) {
    objectives[r] = samples[static_cast<size_t>(r)].objective;
    weights[r] = static_cast<float>(samples[static_cast<size_t>(r)].weight);
  }
  batch.objectives = objectives.to(device);
  batch.weights = weights.to(device);
  return batch;
}

Batch TranslationTask::pairs_batch(const std::vector<Sample>& samples, torch::Device device) const {
  const int64_t count = static_cast<int64_t>(samples.size());
  size_t longest_source = 1, longest_target = 1;
  for (const Sample& x : samples) {
    longest_source = std::max(longest_source, x.source.size() + 1);
    longest_target = std::max(longest_target, x.target.size() + 1);
  }
  const int64_t s = padded_length(longest_source), t = padded_length(longest_target);
  torch::Tensor source = torch::full({count, s}, pad_, torch::kLong);
  torch::Tensor decoder = torch::full({count, t}, pad_, torch::kLong);
  torch::Tensor labels = torch::full({count, t}, kIgnoreIndex, torch::kLong);
  torch::Tensor source_languages = torch::empty({count}, torch::kLong);
  torch::Tensor target_languages = torch::empty({count}, torch::kLong);
  auto src = source.accessor<int64_t, 2>();
  auto dec = decoder.accessor<int64_t, 2>();
  auto lab = labels.accessor<int64_t, 2>();
  for (int64_t r = 0; r < count; ++r) {
    const Sample& x = samples[static_cast<size_t>(r)];
    const int64_t n = static_cast<int64_t>(x.source.size()), m = static_cast<int64_t>(x.target.size());
    for (int64_t i = 0; i < n; ++i) src[r][i] = x.source[static_cast<size_t>(i)];
    src[r][n] = eos_;
    dec[r][0] = bos_;
    for (int64_t i = 0; i < m; ++i) {
      dec[r][i + 1] = x.target[static_cast<size_t>(i)];
      lab[r][i] = x.target[static_cast<size_t>(i)];
    }
    lab[r][m] = eos_;
    source_languages[r] = x.source_language;
    target_languages[r] = x.target_language;
  }
  Batch batch;
  batch.inputs.input_ids = source.t().contiguous().to(device);
  batch.inputs.mask = (source != pad_).t().contiguous().to(device);
  batch.inputs.languages = source_languages.to(device);
  batch.inputs.decoder_input_ids = decoder.t().contiguous().to(device);
  batch.inputs.decoder_mask = (labels != kIgnoreIndex).t().contiguous().to(device);
  batch.inputs.decoder_languages = target_languages.to(device);
  batch.labels = labels.t().contiguous().to(device);
  return batch;
}

Batch TranslationTask::masked_batch(const std::vector<Sample>& samples, torch::Device device) const {
  const int64_t count = static_cast<int64_t>(samples.size());
  size_t longest = 1;
  for (const Sample& x : samples) longest = std::max(longest, x.source.size() + 1);
  const int64_t s = padded_length(longest);
  torch::Tensor source = torch::full({count, s}, pad_, torch::kLong);               // [b, s]
  torch::Tensor labels = torch::full({count, s}, kIgnoreIndex, torch::kLong);       // [b, s]: only predicted tokens
  torch::Tensor languages = torch::empty({count}, torch::kLong);                    // [b]
  auto src = source.accessor<int64_t, 2>();
  auto lab = labels.accessor<int64_t, 2>();
  for (int64_t r = 0; r < count; ++r) {
    const Sample& x = samples[static_cast<size_t>(r)];
    const int64_t n = static_cast<int64_t>(x.source.size());
    for (int64_t i = 0; i < n; ++i) {
      src[r][i] = x.source[static_cast<size_t>(i)];
      if (x.predict[static_cast<size_t>(i)]) lab[r][i] = x.target[static_cast<size_t>(i)];
    }
    src[r][n] = eos_;
    languages[r] = x.source_language;
  }
  Batch batch;
  batch.inputs.input_ids = source.t().contiguous().to(device);
  batch.inputs.mask = (source != pad_).t().contiguous().to(device);
  batch.inputs.languages = languages.to(device);
  batch.inputs.decoder_input_ids = torch::empty({0, count}, torch::TensorOptions().dtype(torch::kLong).device(device));
  batch.inputs.encoder_only = true;
  batch.labels = labels.t().contiguous().to(device);  // [s, b], like the logits of the source
  return batch;
}

int64_t TranslationTask::target_length(Split split, int64_t index) const {
  if (mlm_) {
    const std::vector<bool> predict = sample(split, index).predict;
    return std::count(predict.begin(), predict.end(), true);
  }
  const IndexedDataset* data;
  int64_t sequence;
  if (split == Split::kTrain) {
    const auto [slot, n] = slot_of(index);
    data = slot->target != nullptr ? slot->target : slot->source;
    sequence = sequence_of(*slot, n);
  } else {
    const auto [set, i] = eval_sample(split, index);
    data = set->target;
    sequence = i;
  }
  return static_cast<int64_t>(tokens_of(*data, sequence).size()) + 1;
}

double TranslationTask::loss_units(Split split, int64_t first, int64_t count) const {
  double units = 0;
  for (int64_t i = first; i < first + count; ++i) units += static_cast<double>(target_length(split, i));
  return units;
}

LossTerms TranslationTask::loss(const torch::Tensor& logits, const Batch& batch, double units, Communicator& tp,
                                int64_t vocab) const {
  const torch::Tensor per_sequence = vocab_parallel_cross_entropy(logits, batch.labels, tp, vocab).sum(0);  // [b]
  LossTerms terms;
  terms.loss = (per_sequence * batch.weights).sum() / units;
  const std::vector<std::string> names = metric_names();
  for (size_t o = 0; o < names.size(); ++o) {
    const torch::Tensor mine = (batch.objectives == static_cast<int64_t>(o)).to(per_sequence.scalar_type());
    const torch::Tensor denominator = batch.objective_units[static_cast<int64_t>(o)].clamp_min(1.0);
    terms.metrics[names[o]] = ((per_sequence * mine).sum().to(torch::kDouble) / denominator).detach();
  }
  return terms;
}

std::vector<std::string> TranslationTask::metric_names() const {
  std::vector<std::string> names;
  for (const Objective objective : objectives_) names.push_back(std::string(objective_name(objective)) + "_loss");
  return names;
}

double TranslationTask::flops(int64_t first, int64_t count) const {
  double total = 0;
  for (int64_t i = first; i < first + count; ++i) {
    const Sample x = sample(Split::kTrain, i);
    total += encoder_decoder_flops(config_, static_cast<double>(x.source.size() + 1),
                                   mlm_ ? 0.0 : static_cast<double>(x.target.size() + 1));
  }
  return total;
}

double TranslationTask::tokens(int64_t first, int64_t count) const {
  double total = 0;
  for (int64_t i = first; i < first + count; ++i) {
    const Sample x = sample(Split::kTrain, i);
    total += static_cast<double>(x.source.size() + 1 + (mlm_ ? 0 : x.target.size() + 1));
  }
  return total;
}

}  // namespace foldtron
