// The noise of denoising auto-encoding (Lample et al. 2018; XLM's word_shuffle, word_dropout,
// word_blank), applied to words: a word is a token that starts one (sentencepiece's U+2581 word
// mark) with the tokens that follow it up to the next. In this order:
//   shuffle  each word i gets the key i + u, u ~ U[0, k), and words are sorted by key: no word
//            moves k or more places;
//   dropout  each word is dropped with probability p (one word is kept when all would go);
//   blank    each word is replaced by one blank token with probability p.
// The end-of-sequence token is the caller's to append after the noise.
//
// Also the corruption of masked language modelling (XLM's pretraining), applied to tokens.
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

struct MaskOptions {
  double probability = 0.15;  // share of tokens predicted
  int64_t mask_id = 0;        // what 80% of the predicted tokens become
  int64_t first_random = 4;   // 10% become a uniform id in [first_random, vocab) (no special token)
  int64_t vocab = 0;
};

// A sentence for masked language modelling: its tokens with the predicted ones corrupted.
struct MaskedTokens {
  std::vector<int64_t> input;
  std::vector<bool> predict;  // per position: the model learns the original token there
};

// Each token is predicted with probability `probability` (one when none would be, in a non-empty
// sentence); a predicted token becomes mask_id (80%), a random id (10%) or stays (10%).
MaskedTokens mask_tokens(const std::vector<int64_t>& tokens, const MaskOptions& options, std::mt19937_64& rng);

}  // namespace foldtron
