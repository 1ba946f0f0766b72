// Batched translation (see translate.h).
#include "tasks/unmt/translate.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include <fmt/format.h>
#include <torch/torch.h>

#include "core/errors.h"
#include "core/text.h"
#include "data/tokenizer.h"
#include "generation/generate.h"
#include "models/model.h"

namespace foldtron {

std::vector<std::vector<int64_t>> decode_sources(Model& model, ProcessGroups& groups,
                                                 const std::vector<std::vector<int64_t>>& sources,
                                                 const GenerationOptions& options) {
  size_t longest = 0;
  for (const auto& source : sources) longest = std::max(longest, source.size());
  const int64_t rows = static_cast<int64_t>(sources.size()), columns = static_cast<int64_t>(longest);
  torch::Tensor ids = torch::full({rows, columns}, options.pad_token_id, torch::kLong);  // [rows, S]
  torch::Tensor mask = torch::zeros({rows, columns}, torch::kLong);
  for (int64_t r = 0; r < rows; ++r) {
    const auto& source = sources[static_cast<size_t>(r)];
    const int64_t n = static_cast<int64_t>(source.size());
    ids[r].narrow(0, 0, n).copy_(torch::tensor(source, torch::kLong));
    mask[r].narrow(0, 0, n).fill_(1);
  }
  torch::Tensor out;  // [rows, 1 + new tokens]: the start token first
  {
    // generate() switches the model to evaluation (no dropout); its mode comes back however
    // generation ends.
    struct ModeGuard {
      Model& model;
      bool training;
      ~ModeGuard() { model.train(training); }
    } guard{model, model.is_training()};
    torch::NoGradGuard no_grad;
    out = generate(model, groups, ids, mask, options);
  }
  const auto values = out.accessor<int64_t, 2>();
  std::vector<std::vector<int64_t>> decoded(sources.size());
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 1; c < out.size(1); ++c) {
      const int64_t token = values[r][c];
      if (token == options.pad_token_id ||
          std::find(options.eos_token_ids.begin(), options.eos_token_ids.end(), token) != options.eos_token_ids.end()) {
        break;
      }
      decoded[static_cast<size_t>(r)].push_back(token);
    }
  }
  return decoded;
}

int64_t language_index(const TranslationConfig& config, const std::string& language, const std::string& key) {
  std::vector<std::string> names;
  for (const std::string& name : split(config.languages, ' ')) {
    if (!name.empty()) names.push_back(name);
  }
  const auto it = std::find(names.begin(), names.end(), language);
  if (it == names.end()) {
    throw ConfigError(key, fmt::format("'{}' is not one of translation.languages ({})", language, join(names, " ")),
                      suggest(language, names));
  }
  return it - names.begin();
}

std::vector<std::string> translate_lines(Model& model, ProcessGroups& groups, const TextTokenizer& tokenizer,
                                         const Config& config, const std::vector<std::string>& lines,
                                         const TranslateOptions& options) {
  const int64_t source = language_index(config.translation, options.source_language, "--src-lang");
  const int64_t target = language_index(config.translation, options.target_language, "--tgt-lang");
  const int64_t eos = tokenizer.eos_id(), bos = tokenizer.bos_id(), pad = tokenizer.pad_id();
  const size_t limit = static_cast<size_t>(std::max<int64_t>(config.translation.max_length - 1, 1));
  std::vector<std::vector<int64_t>> encoded(lines.size());
  for (size_t i = 0; i < lines.size(); ++i) {
    encoded[i] = tokenizer.encode(lines[i]);
    if (encoded[i].size() > limit) encoded[i].resize(limit);
  }
  // Longest first, so each batch holds sentences of similar length.
  std::vector<size_t> order;
  for (size_t i = 0; i < lines.size(); ++i) {
    if (!encoded[i].empty()) order.push_back(i);
  }
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return encoded[a].size() > encoded[b].size(); });
  GenerationOptions generation;
  generation.num_beams = options.num_beams;
  generation.early_stopping = EarlyStopping::kTrue;
  generation.length_penalty = options.length_penalty;
  generation.eos_token_ids = {eos};
  generation.pad_token_id = pad;
  generation.decoder_start_token_id = bos;
  generation.source_language = source;
  generation.target_language = target;
  std::vector<std::string> out(lines.size());
  for (size_t begin = 0; begin < order.size(); begin += static_cast<size_t>(options.batch_size)) {
    const size_t end = std::min(order.size(), begin + static_cast<size_t>(options.batch_size));
    std::vector<std::vector<int64_t>> sources;
    for (size_t i = begin; i < end; ++i) {
      sources.push_back(encoded[order[i]]);
      sources.back().push_back(eos);
    }
    // a * (the batch's longest source) + b new tokens, within the decoder's positions.
    const double longest = static_cast<double>(sources.front().size());
    generation.max_new_tokens = std::min<int64_t>(
        config.model.max_position_embeddings - 1,
        static_cast<int64_t>(std::floor(options.max_len_a * longest)) + options.max_len_b);
    const std::vector<std::vector<int64_t>> decoded = decode_sources(model, groups, sources, generation);
    for (size_t r = 0; r < decoded.size(); ++r) {
      const std::vector<int64_t>& tokens = decoded[r];
      out[order[begin + r]] = tokenizer.decode(tokens);
    }
  }
  return out;
}

}  // namespace foldtron
