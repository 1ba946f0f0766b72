// Discourse instances as the classifiers read them: each argument cut into words (whitespace,
// with leading and trailing punctuation split off, at most discourse.max_words), each word as its
// characters and its id in a vocabulary of the training words (lower-cased), and, with a
// pretrained encoder, each word's contextual vector. The vocabularies (classes, words, characters,
// connectives) come from the training instances only and are saved with the model.
//
// The contextual encoder is an encoder-decoder checkpoint pretrained by masked language modelling
// (translation.mlm), read frozen as ELMo is in the multi-grained model: each argument alone is
// tokenized word by word and encoded (the pieces of a word averaged into its vector, from the
// last encoder layer); the baseline reads the pair [Arg1 </s> Arg2 </s>] instead, pooled into the
// mean of every position and the state at the separator. The encoder runs in the job's layout
// (forward_batch: tp, pp, dp), so every rank gets every instance's vectors.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>
#include <torch/types.h>

#include "config/config.h"
#include "tasks/discourse/metrics.h"
#include "tasks/discourse/pdtb.h"

namespace foldtron {

class Model;
class ProcessGroups;
class TextTokenizer;
struct TrainState;

// The words of an argument: whitespace-separated, leading and trailing punctuation split off as
// words of their own, the first `max_words` kept.
std::vector<std::string> discourse_words(const std::string& text, int64_t max_words);

// The code points of a word as UTF-8 strings (invalid bytes one each).
std::vector<std::string> word_characters(const std::string& word);

// A vocabulary: index 0 is padding, 1 the unknown entry.
class Vocabulary {
 public:
  Vocabulary() = default;
  explicit Vocabulary(std::vector<std::string> entries);
  // The `limit` most frequent of `counts` (ties alphabetical) after <pad> and <unk>.
  static Vocabulary most_frequent(const std::map<std::string, int64_t>& counts, int64_t limit);
  int64_t id(const std::string& entry) const;  // 1 when unknown
  int64_t size() const { return static_cast<int64_t>(entries_.size()); }
  const std::vector<std::string>& entries() const { return entries_; }

 private:
  std::vector<std::string> entries_;
  std::map<std::string, int64_t> ids_;
};

struct DiscourseVocabularies {
  std::vector<std::string> classes;  // the level's labels, in index order
  Vocabulary words, characters, connectives;
  int64_t class_id(const std::string& label) const;  // -1 when not a class
};

// The classes of a level: the four top-level senses, or eleven_way_types().
std::vector<std::string> level_classes(SenseLevel level);

// Classes: level_classes(level); words: the discourse.word_vocab most frequent; characters: the
// 1,000 most frequent; connectives: the 500 most frequent (lower-cased). DataError when no
// training instance has a class.
DiscourseVocabularies build_vocabularies(const std::vector<DiscourseInstance>& train, SenseLevel level,
                                         const DiscourseConfig& config);
nlohmann::json vocabularies_json(const DiscourseVocabularies& v);
DiscourseVocabularies vocabularies_from_json(const nlohmann::json& j, const std::string& where);

struct EncodedArgument {
  torch::Tensor words;    // [n] int64 word ids (n >= 1: an empty argument is one <unk>)
  torch::Tensor chars;    // [n, c] int64 character ids, 0 padding
  torch::Tensor context;  // [n, hc] fp32 contextual vectors; undefined without an encoder
};

struct EncodedInstance {
  std::string id;
  EncodedArgument arg1, arg2;
  torch::Tensor pair;               // [2 hc] fp32 pooled pair encoding (baseline); undefined otherwise
  std::vector<int64_t> labels;      // class ids, the first the primary
  int64_t connective = 0;           // connective id (0: none)
};

// The words and characters of every instance (no encoder yet), with labels that are classes.
std::vector<EncodedInstance> encode_instances(const std::vector<DiscourseInstance>& instances,
                                              const DiscourseVocabularies& vocabularies, const DiscourseConfig& config);

// The frozen pretrained encoder of discourse.encoder, on this rank's shard of the job's layout.
class ContextEncoder {
 public:
  // Loads the checkpoint with the job's parallel section (CheckpointError when it is not an
  // encoder-decoder of the translation task). Collective over `groups`.
  ContextEncoder(const Config& job, ProcessGroups& groups, torch::Device device);
  ~ContextEncoder();
  int64_t hidden_size() const;
  // Fills context (multigrained) or pair (baseline) of every instance; `texts` are the
  // instances' (arg1, arg2). Collective: every rank passes the same instances.
  void encode(std::vector<EncodedInstance>& instances, const std::vector<DiscourseInstance>& texts,
              bool pair) const;

 private:
  // The last encoder layer's states [B, S, hc] of token rows (each ending in </s>), padded.
  torch::Tensor states(const std::vector<std::vector<int64_t>>& rows) const;
  std::vector<int64_t> word_pieces(const std::string& word, bool first) const;

  DiscourseConfig config_;
  ProcessGroups& groups_;
  std::unique_ptr<TrainState> state_;
  std::unique_ptr<TextTokenizer> tokenizer_;
  int64_t language_ = -1, max_tokens_ = 0;
};

}  // namespace foldtron
