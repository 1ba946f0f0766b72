// The noise of denoising auto-encoding (Lample et al. 2018; XLM's word_shuffle, word_dropout,
// word_blank), applied to words: a word is a token that starts one (sentencepiece's U+2581 word
// mark) with the tokens that follow it up to the next. In this order:
//   shuffle  each word i gets the key i + u, u ~ U[0, k), and words are sorted by key: no word
//            moves k or more places;
//   dropout  each word is dropped with probability p (one word is kept when all would go);
//   blank    each word is replaced by one blank token with probability p.
// The end-of-sequence token is the caller's to append after the noise.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

namespace foldtron {

class TextTokenizer;

struct NoiseOptions {
  int64_t shuffle = 3;  // k; 0 or 1: no shuffle
  double dropout = 0.1;
  double blank = 0.1;
  int64_t blank_id = 0;
};

// Per vocabulary id: whether the token starts a word.
std::vector<bool> word_starts(const TextTokenizer& tokenizer);

// The tokens as words: the first token of each word (the first token always starts one).
std::vector<std::vector<int64_t>> split_words(const std::vector<int64_t>& tokens, const std::vector<bool>& starts);

// The noised tokens of `tokens`, drawing from `rng`.
std::vector<int64_t> add_noise(const std::vector<int64_t>& tokens, const std::vector<bool>& starts,
                               const NoiseOptions& options, std::mt19937_64& rng);

}  // namespace foldtron
