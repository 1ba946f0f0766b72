// Generation for decoder-only and encoder-decoder models, as Hugging Face's generate() does it:
// greedy search, sampling (temperature, top-k, top-p) and beam search (length penalty, early
// stopping), with its logits processors (bad words, minimum length, forced end-of-sequence), an
// incremental key/value cache, batched, in any layout: tp ranks decode alike (logits gathered),
// pipeline stages pass each step along, each dp rank decodes its own share of the batch (all
// ranks step together while any still decodes, since expert dispatch spans dp ranks), and the
// outputs are gathered to every rank.
//
// Output as generate() returns it: decoder-only, the prompt then the new tokens; encoder-decoder,
// the decoder start token then the new tokens; rows that end early padded with the pad id, to the
// longest row of the batch.
#pragma once

#include <cstdint>
#include <vector>

#include <torch/types.h>

#include "models/model.h"

namespace foldtron {

class ProcessGroups;

enum class EarlyStopping { kFalse, kTrue, kNever };

struct GenerationOptions {
  int64_t max_new_tokens = 20;
  int64_t max_length = -1;  // when >= 0: the total length (prompt or start token included) instead
  // When max_length_a > 0: max_new_tokens = floor(a * (longest source of the batch) + b), the
  // translation rule (a * src + b).
  double max_length_a = 0;
  int64_t max_length_b = 0;
  int64_t min_new_tokens = 0;
  int64_t num_beams = 1;
  // Beam search even with one beam (Hugging Face runs greedy search then; with early stopping the
  // two agree, which the tests check).
  bool beam_search = false;
  double length_penalty = 1.0;
  EarlyStopping early_stopping = EarlyStopping::kFalse;
  bool do_sample = false;
  double temperature = 1.0;
  int64_t top_k = 0;    // 0: off
  double top_p = 1.0;   // 1: off
  uint64_t seed = 0;    // sampling: row r of the batch draws from a generator seeded seed + r
  std::vector<int64_t> eos_token_ids;
  int64_t pad_token_id = -1;  // -1: the first eos id
  int64_t decoder_start_token_id = -1;
  // Language embeddings (model.num_languages) of every row: the source's and the output's; -1: none.
  int64_t source_language = -1;
  int64_t target_language = -1;
  // Per-row languages, int64 [B] of the whole batch, in their place when defined: one batch may
  // translate in several directions (the back-translations of a training step).
  torch::Tensor source_languages, target_languages;
  int64_t forced_eos_token_id = -1;
  std::vector<std::vector<int64_t>> bad_words_ids;
};

// input_ids [B, S] int64 (any device; the same on every rank), attention_mask [B, S] (1: token;
// undefined: all tokens; decoder-only prompts are padded on the left) -> output ids [B, L] int64
// on the CPU, on every rank. Collective over every group.
torch::Tensor generate(Model& model, ProcessGroups& groups, const torch::Tensor& input_ids,
                       const torch::Tensor& attention_mask, const GenerationOptions& options);

// The logits processors, in Hugging Face's order, on scores [N, V] of rows `sequences` [N, L]
// (the tokens so far, prompt or start token included) with `max_length` total tokens: bad words
// -inf, eos -inf below the minimum length, only the forced eos at the last position; then, when
// sampling, temperature, top-k and top-p. Returns new scores.
torch::Tensor process_logits(const torch::Tensor& scores, const torch::Tensor& sequences, int64_t max_length,
                             int64_t min_length, const GenerationOptions& options, bool sampling);

}  // namespace foldtron
