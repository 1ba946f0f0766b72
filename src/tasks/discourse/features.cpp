// Words, characters, vocabularies and the frozen contextual encoder (see features.h).
#include "tasks/discourse/features.h"

#include <algorithm>
#include <cctype>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "config/validate.h"
#include "core/errors.h"
#include "data/tokenizer.h"
#include "layers/embedding.h"  // kIgnoreIndex
#include "models/model.h"
#include "parallel/process_groups.h"
#include "tasks/unmt/translate.h"
#include "training/checkpointing.h"
#include "training/forward.h"
#include "training/train_state.h"

namespace foldtron {
namespace {

constexpr int64_t kMaxWordChars = 20;  // characters kept per word (the CNN's input width)

bool is_punct(unsigned char c) { return c < 128 && std::ispunct(c); }

std::string lower(std::string word) {
  for (char& c : word) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return word;
}

}  // namespace

std::vector<std::string> discourse_words(const std::string& text, int64_t max_words) {
  std::vector<std::string> out;
  size_t i = 0;
  const auto push = [&](std::string w) {
    if (static_cast<int64_t>(out.size()) < max_words) out.push_back(std::move(w));
  };
  while (i < text.size()) {
    while (i < text.size() && std::isspace(static_cast<unsigned char>(text[i]))) ++i;
    size_t end = i;
    while (end < text.size() && !std::isspace(static_cast<unsigned char>(text[end]))) ++end;
    if (end == i) break;
    size_t begin = i, stop = end;
    std::vector<std::string> tail;
    while (begin < stop && is_punct(static_cast<unsigned char>(text[begin]))) push(text.substr(begin++, 1));
    while (stop > begin && is_punct(static_cast<unsigned char>(text[stop - 1]))) tail.push_back(text.substr(--stop, 1));
    if (stop > begin) push(text.substr(begin, stop - begin));
    for (auto t = tail.rbegin(); t != tail.rend(); ++t) push(*t);
    i = end;
  }
  return out;
}

std::vector<std::string> word_characters(const std::string& word) {
  std::vector<std::string> out;
  for (size_t i = 0; i < word.size();) {
    const auto lead = static_cast<unsigned char>(word[i]);
    size_t length = lead < 0x80 ? 1 : (lead >> 5) == 0x6 ? 2 : (lead >> 4) == 0xE ? 3 : (lead >> 3) == 0x1E ? 4 : 1;
    if (i + length > word.size()) length = 1;
    for (size_t k = 1; k < length; ++k) {
      if ((static_cast<unsigned char>(word[i + k]) & 0xC0) != 0x80) length = 1;
    }
    out.push_back(word.substr(i, length));
    i += length;
  }
  return out;
}

Vocabulary::Vocabulary(std::vector<std::string> entries) : entries_(std::move(entries)) {
  for (size_t i = 0; i < entries_.size(); ++i) ids_.emplace(entries_[i], static_cast<int64_t>(i));
}

Vocabulary Vocabulary::most_frequent(const std::map<std::string, int64_t>& counts, int64_t limit) {
  std::vector<std::pair<std::string, int64_t>> sorted(counts.begin(), counts.end());
  std::stable_sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) { return a.second > b.second; });
  std::vector<std::string> entries{"<pad>", "<unk>"};
  for (const auto& [entry, count] : sorted) {
    if (static_cast<int64_t>(entries.size()) - 2 >= limit) break;
    entries.push_back(entry);
  }
  return Vocabulary(std::move(entries));
}

int64_t Vocabulary::id(const std::string& entry) const {
  const auto it = ids_.find(entry);
  return it == ids_.end() ? 1 : it->second;
}

int64_t DiscourseVocabularies::class_id(const std::string& label) const {
  const auto it = std::find(classes.begin(), classes.end(), label);
  return it == classes.end() ? -1 : static_cast<int64_t>(it - classes.begin());
}

std::vector<std::string> level_classes(SenseLevel level) {
  return level == SenseLevel::kFourWay ? std::vector<std::string>{"Comparison", "Contingency", "Expansion", "Temporal"}
                                       : eleven_way_types();
}

DiscourseVocabularies build_vocabularies(const std::vector<DiscourseInstance>& train, SenseLevel level,
                                         const DiscourseConfig& config) {
  DiscourseVocabularies v;
  v.classes = level_classes(level);
  std::map<std::string, int64_t> words, characters, connectives;
  int64_t labelled = 0;
  for (const DiscourseInstance& instance : train) {
    for (const std::string* text : {&instance.arg1, &instance.arg2}) {
      for (const std::string& word : discourse_words(*text, config.max_words)) {
        ++words[lower(word)];
        for (const std::string& c : word_characters(word)) ++characters[c];
      }
    }
    if (!instance.connective.empty()) ++connectives[lower(instance.connective)];
    for (const std::string& label : instance.labels) labelled += v.class_id(label) >= 0 ? 1 : 0;
  }
  if (labelled == 0) {
    throw DataError(fmt::format("none of the {} training instances has a {} class", train.size(),
                                sense_level_name(level)),
                    "check discourse.types and discourse.level against the corpus (the silver corpus is Explicit)");
  }
  v.words = Vocabulary::most_frequent(words, config.word_vocab);
  v.characters = Vocabulary::most_frequent(characters, 1000);
  v.connectives = Vocabulary::most_frequent(connectives, 500);
  return v;
}

nlohmann::json vocabularies_json(const DiscourseVocabularies& v) {
  return {{"classes", v.classes},
          {"words", v.words.entries()},
          {"characters", v.characters.entries()},
          {"connectives", v.connectives.entries()}};
}

DiscourseVocabularies vocabularies_from_json(const nlohmann::json& j, const std::string& where) {
  DiscourseVocabularies v;
  try {
    v.classes = j.at("classes").get<std::vector<std::string>>();
    v.words = Vocabulary(j.at("words").get<std::vector<std::string>>());
    v.characters = Vocabulary(j.at("characters").get<std::vector<std::string>>());
    v.connectives = Vocabulary(j.at("connectives").get<std::vector<std::string>>());
  } catch (const nlohmann::json::exception& e) {
    throw CheckpointError(fmt::format("{}: the vocabularies do not read: {}", where, e.what()),
                          "pass a folder that foldtron discourse train saved");
  }
  return v;
}

namespace {

EncodedArgument encode_argument(const std::string& text, const DiscourseVocabularies& v, int64_t max_words) {
  std::vector<std::string> words = discourse_words(text, max_words);
  if (words.empty()) words.push_back("<unk>");
  const auto n = static_cast<int64_t>(words.size());
  EncodedArgument out;
  out.words = torch::empty({n}, torch::kLong);
  out.chars = torch::zeros({n, kMaxWordChars}, torch::kLong);
  auto w = out.words.accessor<int64_t, 1>();
  auto c = out.chars.accessor<int64_t, 2>();
  for (int64_t i = 0; i < n; ++i) {
    w[i] = v.words.id(lower(words[static_cast<size_t>(i)]));
    const std::vector<std::string> chars = word_characters(words[static_cast<size_t>(i)]);
    for (int64_t k = 0; k < std::min<int64_t>(kMaxWordChars, static_cast<int64_t>(chars.size())); ++k) {
      c[i][k] = v.characters.id(chars[static_cast<size_t>(k)]);
    }
  }
  return out;
}

}  // namespace

std::vector<EncodedInstance> encode_instances(const std::vector<DiscourseInstance>& instances,
                                              const DiscourseVocabularies& vocabularies,
                                              const DiscourseConfig& config) {
  std::vector<EncodedInstance> out;
  out.reserve(instances.size());
  for (const DiscourseInstance& instance : instances) {
    EncodedInstance e;
    e.id = instance.id;
    e.arg1 = encode_argument(instance.arg1, vocabularies, config.max_words);
    e.arg2 = encode_argument(instance.arg2, vocabularies, config.max_words);
    for (const std::string& label : instance.labels) {
      const int64_t id = vocabularies.class_id(label);
      if (id >= 0) e.labels.push_back(id);
    }
    e.connective = instance.connective.empty() ? 0 : vocabularies.connectives.id(lower(instance.connective));
    out.push_back(std::move(e));
  }
  return out;
}

ContextEncoder::ContextEncoder(const Config& job, ProcessGroups& groups, torch::Device device)
    : config_(job.discourse), groups_(groups) {
  const std::string& path = job.discourse.encoder;
  Config encoder = checkpoint_config(path);
  if (!encoder.model.encoder_decoder()) {
    throw CheckpointError(fmt::format("discourse.encoder '{}' is a {} checkpoint, not an encoder-decoder", path,
                                      enum_name(encoder.model.architecture)),
                          "pass a checkpoint of masked language modelling (foldtron train with translation.mlm)");
  }
  encoder.parallel = job.parallel;
  encoder.checkpoint = CheckpointConfig{};
  encoder.checkpoint.load = path;
  encoder.train.micro_batch_size = 1;
  encoder.train.global_batch_size = groups.dp().size();
  validate_config(encoder, groups.world().size());
  state_ = std::make_unique<TrainState>(encoder, groups, device);
  Checkpointer(*state_).load(path);
  state_->model->eval();
  tokenizer_ = make_tokenizer(encoder.data);
  if (encoder.model.num_languages > 0) {
    language_ = language_index(encoder.translation, "en", "the encoder's translation.languages");
  }
  // Rows are padded to a multiple of tp (sequence parallelism): keep them within the positions.
  max_tokens_ = encoder.model.max_position_embeddings / groups.tp().size() * groups.tp().size();
}

ContextEncoder::~ContextEncoder() = default;

int64_t ContextEncoder::hidden_size() const { return state_->model->hidden_size(); }

std::vector<int64_t> ContextEncoder::word_pieces(const std::string& word, bool first) const {
  std::vector<int64_t> pieces = tokenizer_->encode(first ? word : " " + word);
  if (pieces.empty()) pieces.push_back(std::max<int64_t>(tokenizer_->unk_id(), 0));
  return pieces;
}

torch::Tensor ContextEncoder::states(const std::vector<std::vector<int64_t>>& rows) const {
  const Config& c = state_->config;
  const int64_t tp = groups_.tp().size();
  int64_t length = 1;
  for (const auto& row : rows) length = std::max<int64_t>(length, static_cast<int64_t>(row.size()));
  length = (length + tp - 1) / tp * tp;  // sequence parallelism splits positions over tp
  const auto batch = static_cast<int64_t>(rows.size());
  ForwardInputs in;
  in.input_ids = torch::full({batch, length}, std::max<int64_t>(c.model.pad_token_id, 0), torch::kLong);
  in.attention_mask = torch::zeros({batch, length}, torch::kLong);
  for (int64_t b = 0; b < batch; ++b) {
    const auto& row = rows[static_cast<size_t>(b)];
    const auto n = static_cast<int64_t>(row.size());
    in.input_ids[b].narrow(0, 0, n).copy_(torch::tensor(row, torch::kLong));
    in.attention_mask[b].narrow(0, 0, n).fill_(1);
  }
  in.decoder_input_ids = torch::full({batch, tp}, std::max<int64_t>(c.model.decoder_start_token_id, 0), torch::kLong);
  in.labels = torch::full({batch, tp}, kIgnoreIndex, torch::kLong);
  if (language_ >= 0) {
    in.languages = torch::full({batch}, language_, torch::kLong);
    in.decoder_languages = in.languages;
  }
  torch::NoGradGuard no_grad;
  // Every group of the layout (tp, pp, dp: the rows split over dp and gathered back to every rank).
  const ForwardResult out = forward_batch(*state_->model, groups_, in, true);
  return out.hidden_states.at(static_cast<size_t>(state_->model->num_encoder_states() - 1)).cpu();  // [B, S, hc]
}

void ContextEncoder::encode(std::vector<EncodedInstance>& instances, const std::vector<DiscourseInstance>& texts,
                            bool pair) const {
  FT_CHECK(instances.size() == texts.size(), "one text per instance");
  const int64_t eos = tokenizer_->eos_id();
  const int64_t reserved = eos >= 0 ? 1 : 0;  // positions an argument leaves for its </s>
  // Pieces of each word (cut where the encoder's positions end); per argument, or per pair.
  struct Row {
    std::vector<int64_t> tokens;
    std::vector<int64_t> word_end;  // exclusive end of each word's pieces
  };
  const auto argument_row = [&](const std::string& text, int64_t budget) {
    Row row;
    const std::vector<std::string> words = discourse_words(text, config_.max_words);
    for (size_t i = 0; i < words.size(); ++i) {
      const std::vector<int64_t> pieces = word_pieces(words[i], i == 0);
      if (static_cast<int64_t>(row.tokens.size() + pieces.size()) > budget) break;
      row.tokens.insert(row.tokens.end(), pieces.begin(), pieces.end());
      row.word_end.push_back(static_cast<int64_t>(row.tokens.size()));
    }
    if (row.tokens.empty()) {
      row.tokens.push_back(std::max<int64_t>(tokenizer_->unk_id(), 0));
      row.word_end.push_back(1);
    }
    if (eos >= 0) row.tokens.push_back(eos);  // (a byte tokenizer has none)
    return row;
  };
  const int64_t chunk = std::max<int64_t>(1, config_.eval_batch_size);
  for (size_t first = 0; first < instances.size(); first += static_cast<size_t>(chunk)) {
    const size_t end = std::min(instances.size(), first + static_cast<size_t>(chunk));
    std::vector<Row> rows;
    for (size_t i = first; i < end; ++i) {
      if (pair) {
        Row a = argument_row(texts[i].arg1, max_tokens_ / 2 - reserved);
        const Row b = argument_row(texts[i].arg2, max_tokens_ / 2 - reserved);
        a.word_end = {static_cast<int64_t>(a.tokens.size()) - 1};  // the separator (</s>, or Arg1's last piece)
        a.tokens.insert(a.tokens.end(), b.tokens.begin(), b.tokens.end());
        rows.push_back(std::move(a));
      } else {
        rows.push_back(argument_row(texts[i].arg1, max_tokens_ - reserved));
        rows.push_back(argument_row(texts[i].arg2, max_tokens_ - reserved));
      }
    }
    std::vector<std::vector<int64_t>> tokens;
    for (const Row& row : rows) tokens.push_back(row.tokens);
    const torch::Tensor h = states(tokens);  // [rows, S, hc]
    for (size_t i = first; i < end; ++i) {
      EncodedInstance& e = instances[i];
      if (pair) {
        const Row& row = rows[i - first];
        const torch::Tensor x = h[static_cast<int64_t>(i - first)];
        const auto n = static_cast<int64_t>(row.tokens.size());
        e.pair = torch::cat({x.narrow(0, 0, n).mean(0), x[row.word_end[0]]});  // [2 hc]
        continue;
      }
      for (int64_t side = 0; side < 2; ++side) {
        const Row& row = rows[2 * (i - first) + static_cast<size_t>(side)];
        const torch::Tensor x = h[2 * static_cast<int64_t>(i - first) + side];  // [S, hc]
        EncodedArgument& arg = side == 0 ? e.arg1 : e.arg2;
        const int64_t words = arg.words.size(0), kept = static_cast<int64_t>(row.word_end.size());
        torch::Tensor context = torch::zeros({words, x.size(1)});  // words past the positions: zeros
        int64_t begin = 0;
        for (int64_t w = 0; w < std::min(words, kept); ++w) {
          const int64_t stop = row.word_end[static_cast<size_t>(w)];
          context[w] = x.narrow(0, begin, stop - begin).mean(0);
          begin = stop;
        }
        arg.context = context;
      }
    }
  }
}

}  // namespace foldtron
