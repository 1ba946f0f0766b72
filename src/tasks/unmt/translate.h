// Translating text with a trained encoder-decoder: lines are tokenized (cut to the task's
// max_length, end-of-sequence appended), sorted by length into batches, decoded by generate()
// (greedy or beam search, at most max_len_a * (the batch's longest source) + max_len_b new
// tokens, and no more than the decoder has positions for) with the languages' embeddings, and
// detokenized; one output line per input line, in input order. An empty line translates to an
// empty line. Collective: every rank passes the same lines.
#pragma once

#include <string>
#include <vector>

#include "config/config.h"
#include "generation/generate.h"

namespace foldtron {

class Model;
class ProcessGroups;
class TextTokenizer;

struct TranslateOptions {
  std::string source_language, target_language;
  int64_t num_beams = 1;
  int64_t batch_size = 64;
  double max_len_a = 1.5;
  int64_t max_len_b = 10;
  double length_penalty = 1.0;
};

// Each source (token ids ending in end-of-sequence) decoded by generate() with `options`, batched
// with right padding (options.pad_token_id) and its mask, without gradients and in evaluation
// mode (the model's mode is restored): the new tokens of each row, up to its first
// end-of-sequence or padding. options.max_new_tokens is used as given. Collective.
std::vector<std::vector<int64_t>> decode_sources(Model& model, ProcessGroups& groups,
                                                 const std::vector<std::vector<int64_t>>& sources,
                                                 const GenerationOptions& options);

// The id of `language` in translation.languages; ConfigError naming `key` when it is not there.
int64_t language_index(const TranslationConfig& config, const std::string& language, const std::string& key);

std::vector<std::string> translate_lines(Model& model, ProcessGroups& groups, const TextTokenizer& tokenizer,
                                         const Config& config, const std::vector<std::string>& lines,
                                         const TranslateOptions& options);

}  // namespace foldtron
