// Denoising noise (see noise.h).
#include "tasks/unmt/noise.h"

#include <algorithm>
#include <numeric>

#include "data/tokenizer.h"

namespace foldtron {

std::vector<bool> word_starts(const TextTokenizer& tokenizer) {
  static const std::string kWordMark = "\xe2\x96\x81";  // U+2581
  std::vector<bool> out(static_cast<size_t>(tokenizer.vocab_size()), false);
  for (int64_t id = 0; id < tokenizer.vocab_size(); ++id) {
    const std::string piece = tokenizer.piece(id);
    out[static_cast<size_t>(id)] = piece.rfind(kWordMark, 0) == 0;
  }
  return out;
}

std::vector<std::vector<int64_t>> split_words(const std::vector<int64_t>& tokens, const std::vector<bool>& starts) {
  std::vector<std::vector<int64_t>> words;
  for (const int64_t token : tokens) {
    const bool start = token >= 0 && token < static_cast<int64_t>(starts.size()) && starts[static_cast<size_t>(token)];
    if (words.empty() || start) words.emplace_back();
    words.back().push_back(token);
  }
  return words;
}

std::vector<int64_t> add_noise(const std::vector<int64_t>& tokens, const std::vector<bool>& starts,
                               const NoiseOptions& options, std::mt19937_64& rng) {
  std::vector<std::vector<int64_t>> words = split_words(tokens, starts);
  if (words.empty()) return {};
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  if (options.shuffle > 1) {
    std::vector<double> keys(words.size());
    for (size_t i = 0; i < words.size(); ++i) keys[i] = static_cast<double>(i) + unit(rng) * static_cast<double>(options.shuffle);
    std::vector<size_t> order(words.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return keys[a] < keys[b]; });
    std::vector<std::vector<int64_t>> shuffled;
    for (const size_t i : order) shuffled.push_back(std::move(words[i]));
    words = std::move(shuffled);
  }
  if (options.dropout > 0) {
    std::vector<std::vector<int64_t>> kept;
    for (auto& word : words) {
      if (unit(rng) >= options.dropout) kept.push_back(word);
    }
    if (kept.empty()) kept.push_back(words[std::uniform_int_distribution<size_t>(0, words.size() - 1)(rng)]);
    words = std::move(kept);
  }
  std::vector<int64_t> out;
  for (const auto& word : words) {
    if (options.blank > 0 && unit(rng) < options.blank) {
      out.push_back(options.blank_id);
    } else {
      out.insert(out.end(), word.begin(), word.end());
    }
  }
  return out;
}

MaskedTokens mask_tokens(const std::vector<int64_t>& tokens, const MaskOptions& options, std::mt19937_64& rng) {
  MaskedTokens out{tokens, std::vector<bool>(tokens.size(), false)};
  if (tokens.empty()) return out;
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  bool any = false;
  for (size_t i = 0; i < tokens.size(); ++i) {
    out.predict[i] = unit(rng) < options.probability;
    any = any || out.predict[i];
  }
  if (!any) out.predict[std::uniform_int_distribution<size_t>(0, tokens.size() - 1)(rng)] = true;
  std::uniform_int_distribution<int64_t> random_id(options.first_random, options.vocab - 1);
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (!out.predict[i]) continue;
    const double u = unit(rng);
    if (u < 0.8) {
      out.input[i] = options.mask_id;
    } else if (u < 0.9) {
      out.input[i] = random_id(rng);
    }
  }
  return out;
}

}  // namespace foldtron
