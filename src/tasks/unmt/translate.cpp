// Batched translation (see translate.h).
#include "tasks/unmt/translate.h"

#include <algorithm>
#include <numeric>

#include <fmt/format.h>
#include <torch/torch.h>

#include "core/errors.h"
#include "core/text.h"
#include "data/tokenizer.h"
#include "generation/generate.h"
#include "models/model.h"

namespace foldtron {

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
  generation.max_length_a = options.max_len_a;
  generation.max_length_b = options.max_len_b;
  generation.eos_token_ids = {eos};
  generation.pad_token_id = pad;
  generation.decoder_start_token_id = bos;
  generation.source_language = source;
  generation.target_language = target;
  std::vector<std::string> out(lines.size());
  for (size_t begin = 0; begin < order.size(); begin += static_cast<size_t>(options.batch_size)) {
    const size_t end = std::min(order.size(), begin + static_cast<size_t>(options.batch_size));
    const int64_t rows = static_cast<int64_t>(end - begin);
    const int64_t longest = static_cast<int64_t>(encoded[order[begin]].size()) + 1;
    torch::Tensor ids = torch::full({rows, longest}, pad, torch::kLong);
    torch::Tensor mask = torch::zeros({rows, longest}, torch::kLong);
    for (int64_t r = 0; r < rows; ++r) {
      std::vector<int64_t> tokens = encoded[order[begin + static_cast<size_t>(r)]];
      tokens.push_back(eos);
      const int64_t n = static_cast<int64_t>(tokens.size());
      ids[r].narrow(0, 0, n).copy_(torch::tensor(tokens, torch::kLong));
      mask[r].narrow(0, 0, n).fill_(1);
    }
    torch::Tensor result;
    {
      torch::NoGradGuard no_grad;
      result = generate(model, groups, ids, mask, generation);
    }
    const auto rows_out = result.accessor<int64_t, 2>();
    for (int64_t r = 0; r < rows; ++r) {
      std::vector<int64_t> tokens;
      for (int64_t c = 1; c < result.size(1); ++c) {
        const int64_t token = rows_out[r][c];
        if (token == eos || token == pad) break;
        tokens.push_back(token);
      }
      out[order[begin + static_cast<size_t>(r)]] = tokenizer.decode(tokens);
    }
  }
  return out;
}

}  // namespace foldtron
