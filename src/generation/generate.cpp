// Greedy search, sampling and beam search (see generate.h).
#include "generation/generate.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>
#include <torch/torch.h>

#include "core/errors.h"
#include "core/math.h"
#include "core/text.h"
#include "generation/step_runner.h"
#include "parallel/process_groups.h"

namespace foldtron {
namespace {

constexpr float kMasked = -1e9F;  // Hugging Face's score of an empty or excluded beam

// Whether `flag` holds on any rank (every rank steps while one still decodes).
bool any_rank(Communicator& world, bool flag) {
  torch::Tensor value = torch::full({1}, flag ? 1.0 : 0.0, torch::kDouble);
  world.all_reduce(value, ReduceOp::kMax);
  return value.item<double>() > 0;
}

// The decoding of this rank's rows: the inputs of the prefill and of each step, and the cache.
class Session {
 public:
  // ids, mask [n, S] on the model's device (mask undefined: no padding).
  Session(Model& model, ProcessGroups& groups, const torch::Tensor& ids, const torch::Tensor& mask,
          const GenerationOptions& options)
      : runner_(model, groups), encoder_decoder_(model.encoder_decoder()), device_(ids.device()) {
    const auto longs = torch::TensorOptions().dtype(torch::kLong).device(device_);
    const int64_t n = ids.size(0);
    if (encoder_decoder_) {
      FT_CHECK(options.decoder_start_token_id >= 0, "an encoder-decoder needs a decoder start token (checked before)");
      inputs_.input_ids = ids.t().contiguous();  // [S, n]
      if (mask.defined()) {
        inputs_.mask = mask.t().contiguous();
        cache_.encoder_padding = mask;
      }
      start_ = torch::full({n, 1}, options.decoder_start_token_id, longs);
      // Every decoder key is a token: the padding of the keys so far lets the model build the
      // self-attention mask once per step (attention_masks) instead of in every layer.
      cache_.key_padding = torch::ones({n, 1}, torch::TensorOptions().dtype(torch::kBool).device(device_));
      inputs_.decoder_input_ids = start_.t().contiguous();            // [1, n]
      inputs_.decoder_positions = torch::zeros({1}, longs);
      const auto languages = [&](const torch::Tensor& rows, int64_t language) {
        if (rows.defined()) return rows.to(device_);
        return language >= 0 ? torch::full({n}, language, longs) : torch::Tensor();
      };
      inputs_.languages = languages(options.source_languages, options.source_language);
      inputs_.decoder_languages = languages(options.target_languages, options.target_language);
    } else {
      inputs_.input_ids = ids.t().contiguous();  // [S, n]
      if (mask.defined()) {
        // Left padding: positions count the tokens (Hugging Face's cumsum - 1; 0 on padding).
        const torch::Tensor positions = (mask.cumsum(1) - 1).masked_fill(mask.logical_not(), 0);  // [n, S]
        inputs_.positions = positions.t().contiguous();
        inputs_.mask = mask.t().contiguous();
        cache_.key_padding = mask;
        next_position_ = positions.narrow(1, positions.size(1) - 1, 1).t() + 1;  // [1, n]
      } else {
        inputs_.positions = torch::arange(ids.size(1), longs);
        next_position_ = torch::full({1, n}, ids.size(1), longs);
      }
      start_ = ids;
    }
  }

  // The tokens every output row starts with: [n, P].
  const torch::Tensor& start() const { return start_; }

  torch::Tensor prefill() {
    torch::Tensor logits = runner_.step(inputs_, cache_);
    cache_.encoder_done = encoder_decoder_;
    return logits;
  }

  // The rows' next tokens [n] -> logits [n, V].
  torch::Tensor next(const torch::Tensor& tokens) {
    const torch::Tensor step = tokens.reshape({1, -1}).to(device_);  // [1, n]
    if (encoder_decoder_) {
      inputs_.decoder_input_ids = step;
      inputs_.decoder_positions = torch::full({1}, ++decoded_, step.options());
    } else {
      inputs_.input_ids = step;
      inputs_.positions = next_position_;
      inputs_.mask = torch::Tensor();
      next_position_ = next_position_ + 1;
    }
    if (cache_.key_padding.defined()) {
      cache_.key_padding = torch::cat({cache_.key_padding, torch::ones({step.size(1), 1}, cache_.key_padding.options())}, 1);
    }
    return runner_.step(inputs_, cache_);
  }

  // Keeps rows `rows` (int64 [n]) of the cache, in that order (beam search).
  void reorder(const torch::Tensor& rows) {
    const torch::Tensor index = rows.to(device_);
    cache_.select(index);
    if (!encoder_decoder_) next_position_ = next_position_.index_select(1, index);
  }

 private:
  StepRunner runner_;
  bool encoder_decoder_;
  torch::Device device_;
  ModelInputs inputs_;
  KVCache cache_;
  torch::Tensor start_;          // [n, P]
  torch::Tensor next_position_;  // [1, n] decoder-only
  int64_t decoded_ = 0;          // encoder-decoder: decoder tokens after the start token
};

int64_t pad_id(const GenerationOptions& options) {
  if (options.pad_token_id >= 0) return options.pad_token_id;
  return options.eos_token_ids.empty() ? 0 : options.eos_token_ids.front();
}

// Whether each of `tokens` [...] is an end-of-sequence id.
torch::Tensor is_eos(const torch::Tensor& tokens, const GenerationOptions& options) {
  torch::Tensor hit = torch::zeros_like(tokens, torch::kBool);
  for (int64_t eos : options.eos_token_ids) hit = hit.logical_or(tokens == eos);
  return hit;
}

// Greedy search and sampling over the rows of `session`: [n, L] on the CPU. Row r samples from
// its own generator, seeded by the seed and the row's index in the whole batch (`first` + r), so
// a seed gives the same samples in every layout. The logits stay on the model's device: greedy
// search brings back only the chosen tokens, sampling the probabilities.
torch::Tensor search(Session& session, Communicator& world, const GenerationOptions& options, int64_t max_length,
                     int64_t min_length, int64_t first) {
  torch::Tensor sequences = session.start().cpu();  // [n, P]
  const int64_t n = sequences.size(0);
  torch::Tensor unfinished = torch::ones({n}, torch::kBool);
  std::vector<at::Generator> generators;
  for (int64_t r = 0; r < n; ++r) {
    generators.push_back(at::detail::createCPUGenerator(options.seed + static_cast<uint64_t>(first + r)));
  }
  const int64_t pad = pad_id(options);
  torch::Tensor logits = session.prefill();  // [n, V]
  bool running = sequences.size(1) < max_length;  // the same on every rank
  while (true) {
    torch::Tensor next;
    if (running) {
      const torch::Tensor scores = process_logits(logits, sequences, max_length, min_length, options, options.do_sample);
      if (options.do_sample) {
        const torch::Tensor probs = torch::softmax(scores, -1).cpu();  // [n, V]
        next = torch::empty({n}, torch::kLong);
        for (int64_t r = 0; r < n; ++r) next[r] = torch::multinomial(probs[r], 1, false, generators[r]).item<int64_t>();
      } else {
        next = scores.argmax(-1).cpu();
      }
      if (!options.eos_token_ids.empty()) next = torch::where(unfinished, next, torch::full_like(next, pad));
      sequences = torch::cat({sequences, next.unsqueeze(1)}, 1);
      unfinished = unfinished.logical_and(is_eos(next, options).logical_not());
      running = unfinished.any().item<bool>() && sequences.size(1) < max_length;
    } else {
      next = sequences.select(1, sequences.size(1) - 1);  // a step for the others' sake; not kept
    }
    if (!any_rank(world, running)) break;
    logits = session.next(next);
  }
  return sequences;
}

// Beam search over the rows of `session` (B sources x K beams, beam k of source b at row b*K + k),
// Hugging Face's vectorized algorithm: log-softmax, processors, plus the beam's score; the best
// 2K candidates; those ending the sequence (among the first K) become finished hypotheses scored
// by length-normalized log-probability, the best K others run on. Returns each source's best
// hypothesis, [B, L] on the CPU.
torch::Tensor beam_search(Session& session, Communicator& world, const GenerationOptions& options, int64_t batch,
                          int64_t max_length, int64_t min_length) {
  using torch::indexing::Slice;
  const int64_t K = options.num_beams;
  const int64_t keep = std::max<int64_t>(2, 1 + static_cast<int64_t>(options.eos_token_ids.size())) * K;
  const torch::Tensor start = session.start().cpu();  // [B*K, P]
  const int64_t prompt = start.size(1);
  const int64_t fill = pad_id(options);
  const auto floats = torch::TensorOptions().dtype(torch::kFloat);
  torch::Tensor running = torch::full({batch, K, max_length}, fill, torch::kLong);
  running.index_put_({Slice(), Slice(), Slice(0, prompt)}, start.view({batch, K, prompt}));
  torch::Tensor finished = running.clone();                                    // [B, K, L]
  torch::Tensor running_scores = torch::full({batch, K}, kMasked, floats);     // [B, K]
  running_scores.select(1, 0).fill_(0.0);
  torch::Tensor finished_scores = torch::full({batch, K}, kMasked, floats);    // [B, K]
  torch::Tensor finished_length = torch::full({batch, K}, prompt, torch::kLong);
  torch::Tensor is_finished = torch::zeros({batch, K}, torch::kBool);
  torch::Tensor not_done = torch::ones({batch, 1}, torch::kBool);
  const torch::Tensor top_k_mask = torch::arange(keep) < K;                    // [2K]: may finish
  const torch::Tensor base = (torch::arange(batch) * K).unsqueeze(1);          // [B, 1]
  torch::Tensor logits = session.prefill().cpu();                              // [B*K, V]
  bool searching = true;
  for (int64_t length = prompt; length < max_length; ++length) {
    if (searching) {
      const int64_t vocab = logits.size(1);
      torch::Tensor scores = torch::log_softmax(logits.to(torch::kFloat), -1);
      scores = process_logits(scores, running.view({batch * K, max_length}).narrow(1, 0, length), max_length,
                              min_length, options, false);
      scores = (scores.view({batch, K, vocab}) + running_scores.unsqueeze(2)).view({batch, K * vocab});
      const auto [top_scores, top_index] = scores.topk(keep, 1);               // [B, 2K], best first
      const torch::Tensor source = top_index.div(vocab, "floor");              // [B, 2K] beam
      const torch::Tensor token = top_index.remainder(vocab);
      torch::Tensor candidates = running.gather(1, source.unsqueeze(2).expand({batch, keep, max_length})).clone();
      candidates.select(2, length).copy_(token);
      const torch::Tensor ends = is_eos(token, options).logical_or(torch::full_like(token, length + 1 >= max_length, torch::kBool));
      // Running on: the best K that do not end.
      const torch::Tensor alive = top_scores + ends.to(torch::kFloat) * kMasked;
      const torch::Tensor chosen = std::get<1>(alive.topk(K, 1));               // [B, K]
      running = candidates.gather(1, chosen.unsqueeze(2).expand({batch, K, max_length}));
      running_scores = alive.gather(1, chosen);
      const torch::Tensor from = source.gather(1, chosen);                      // [B, K] beam they extend
      // Finished: candidates among the first K that end, by length-normalized score.
      const torch::Tensor just_finished = ends.logical_and(top_k_mask.unsqueeze(0));
      torch::Tensor normalized = top_scores / std::pow(static_cast<double>(length + 1 - prompt), options.length_penalty);
      if (options.early_stopping == EarlyStopping::kTrue) {
        normalized = normalized + is_finished.all(1, true).to(torch::kFloat) * kMasked;
      }
      normalized = normalized + not_done.logical_not().to(torch::kFloat) * kMasked;
      normalized = normalized + just_finished.logical_not().to(torch::kFloat) * kMasked;
      const torch::Tensor merged = torch::cat({finished_scores, normalized}, 1);  // [B, K + 2K]
      const torch::Tensor best = std::get<1>(merged.topk(K, 1));
      finished = torch::cat({finished, candidates}, 1).gather(1, best.unsqueeze(2).expand({batch, K, max_length}));
      finished_scores = merged.gather(1, best);
      finished_length = torch::cat({finished_length, torch::full({batch, keep}, length + 1, torch::kLong)}, 1).gather(1, best);
      is_finished = torch::cat({is_finished, just_finished}, 1).gather(1, best);
      session.reorder((base + from).reshape({-1}));
      // Whether a running beam could still beat the worst finished one.
      const int64_t generated = options.early_stopping == EarlyStopping::kNever && options.length_penalty > 0
                                    ? max_length - prompt
                                    : length + 1 - prompt;
      const torch::Tensor best_running =
          running_scores.narrow(1, 0, 1) / std::pow(static_cast<double>(generated), options.length_penalty);
      const torch::Tensor worst = torch::where(is_finished, std::get<0>(finished_scores.min(1, true)),
                                               torch::full_like(finished_scores, kMasked));
      not_done = not_done.logical_and((best_running > worst).any(1, true));
      searching = not_done.any().item<bool>() &&
                  !(is_finished.all().item<bool>() && options.early_stopping == EarlyStopping::kTrue) &&
                  !ends.all().item<bool>() && length + 1 < max_length;
    }
    if (!any_rank(world, searching)) break;
    logits = session.next(running.view({batch * K, max_length}).select(1, std::min(length, max_length - 1))).cpu();
  }
  // Each source's best hypothesis, cut after the longest of them.
  const torch::Tensor best = finished.select(1, 0);  // [B, L]
  const int64_t longest = batch > 0 ? finished_length.select(1, 0).max().item<int64_t>() : prompt;
  return best.narrow(1, 0, longest).clone();
}

}  // namespace

torch::Tensor process_logits(const torch::Tensor& scores_in, const torch::Tensor& sequences, int64_t max_length,
                             int64_t min_length, const GenerationOptions& options, bool sampling) {
  torch::Tensor scores = scores_in.to(torch::kFloat).clone();  // [N, V]
  const int64_t vocab = scores.size(1), length = sequences.size(1);
  // Bad words: a banned token, or the last token of a banned sequence whose prefix ends the row.
  for (const auto& words : options.bad_words_ids) {
    if (words.empty() || words.back() >= vocab) continue;
    if (words.size() == 1 && std::find(options.eos_token_ids.begin(), options.eos_token_ids.end(), words[0]) !=
                                 options.eos_token_ids.end()) {
      continue;  // Hugging Face keeps end-of-sequence out of single-token bans
    }
    const auto prefix = static_cast<int64_t>(words.size()) - 1;
    if (prefix == 0) {
      scores.select(1, words.back()).fill_(-kInf);
      continue;
    }
    if (prefix > length) continue;
    const torch::Tensor tail = sequences.narrow(1, length - prefix, prefix).to(torch::kCPU);
    const torch::Tensor want = torch::tensor(std::vector<int64_t>(words.begin(), words.end() - 1), torch::kLong);
    const torch::Tensor match = (tail == want).all(1).to(scores.device());  // [N]
    scores.select(1, words.back()).masked_fill_(match, -kInf);
  }
  if (length < min_length) {
    for (int64_t eos : options.eos_token_ids) scores.select(1, eos).fill_(-kInf);
  }
  if (options.forced_eos_token_id >= 0 && length == max_length - 1) {
    scores.fill_(-kInf);
    scores.select(1, options.forced_eos_token_id).fill_(0.0);
  }
  if (!sampling) return scores;
  if (options.temperature != 1.0) scores = scores / options.temperature;
  if (options.top_k > 0) {
    const int64_t k = std::min(options.top_k, vocab);
    const torch::Tensor threshold = std::get<0>(scores.topk(k, -1)).narrow(1, k - 1, 1);  // [N, 1]
    scores = scores.masked_fill(scores < threshold, -kInf);
  }
  if (options.top_p < 1.0) {
    const auto [sorted, index] = scores.sort(-1, /*descending=*/false);
    const torch::Tensor cumulative = torch::softmax(sorted, -1).cumsum(-1);
    torch::Tensor remove = cumulative <= static_cast<float>(1.0 - options.top_p);
    remove.narrow(1, vocab - 1, 1).fill_(false);  // always keep the most likely
    scores = scores.masked_fill(remove.scatter(1, index, remove), -kInf);
  }
  return scores;
}

torch::Tensor generate(Model& model, ProcessGroups& groups, const torch::Tensor& input_ids,
                       const torch::Tensor& attention_mask, const GenerationOptions& options) {
  if (input_ids.dim() != 2 || input_ids.scalar_type() != torch::kLong || input_ids.size(0) < 1 || input_ids.size(1) < 1) {
    throw DataError(fmt::format("generation needs input_ids int64 [batch, length], got {} {}",
                                c10::toString(input_ids.scalar_type()), shape_text(input_ids.sizes().vec())),
                    "write the prompts as int64 [batch, length]");
  }
  if (model.encoder_decoder() && options.decoder_start_token_id < 0) {
    throw DataError("an encoder-decoder model needs a decoder start token to generate",
                    "set decoder_start_token_id (generation_config.json, or model.decoder_start_token_id)");
  }
  if (options.num_beams < 1 || options.max_new_tokens < 0) {
    throw DataError(fmt::format("num_beams ({}) must be at least 1 and max_new_tokens ({}) not negative",
                                options.num_beams, options.max_new_tokens),
                    "pass --num-beams 1 or more");
  }
  // This dp rank's rows (contiguous, sizes differing by at most one); a rank without rows decodes
  // a copy of row 0 for the collectives' sake.
  const int64_t batch = input_ids.size(0), dp = groups.dp().size(), d = groups.dp().rank();
  std::vector<int64_t> rows;
  for (int64_t r = 0; r < dp; ++r) rows.push_back(batch / dp + (r < batch % dp ? 1 : 0));
  int64_t first = 0;
  for (int64_t r = 0; r < d; ++r) first += rows[static_cast<size_t>(r)];
  const int64_t mine = rows[static_cast<size_t>(d)], count = std::max<int64_t>(mine, 1);
  const torch::Device device = model.context().device;
  torch::Tensor ids = input_ids.narrow(0, mine > 0 ? first : 0, count).to(device);
  torch::Tensor mask;
  if (attention_mask.defined()) {
    mask = attention_mask.narrow(0, mine > 0 ? first : 0, count).to(device).to(torch::kBool);
    if (mask.all().item<bool>()) mask = torch::Tensor();  // no padding: the plain causal kernels
  }
  // The decoder's prompt: the start token, or the prompt itself.
  GenerationOptions local = options;  // per-row languages: this rank's rows
  for (torch::Tensor* languages : {&local.source_languages, &local.target_languages}) {
    if (!languages->defined()) continue;
    if (languages->dim() != 1 || languages->size(0) != batch) {
      throw DataError(fmt::format("per-row languages {} for a batch of {}", shape_text(languages->sizes().vec()), batch),
                      "pass one language id per row");
    }
    *languages = languages->narrow(0, mine > 0 ? first : 0, count).to(torch::kLong);
  }
  const int64_t prompt = model.encoder_decoder() ? 1 : ids.size(1);
  int64_t new_tokens = options.max_new_tokens;
  if (options.max_length_a > 0) {
    // The longest source of the whole batch: every rank decodes to the same length.
    const int64_t longest =
        attention_mask.defined() ? attention_mask.sum(1).max().item<int64_t>() : input_ids.size(1);
    new_tokens = static_cast<int64_t>(std::floor(options.max_length_a * static_cast<double>(longest))) + options.max_length_b;
  }
  const int64_t max_length = options.max_length >= 0 && options.max_length_a <= 0
                                 ? std::max(options.max_length, prompt + 1)
                                 : prompt + std::max<int64_t>(new_tokens, 0);
  const int64_t min_length = prompt + options.min_new_tokens;
  model.eval();
  torch::Tensor out;
  if (options.num_beams > 1 || options.beam_search) {
    const torch::Tensor expanded_ids = ids.repeat_interleave(options.num_beams, 0);
    const torch::Tensor expanded_mask = mask.defined() ? mask.repeat_interleave(options.num_beams, 0) : mask;
    for (torch::Tensor* languages : {&local.source_languages, &local.target_languages}) {
      if (languages->defined()) *languages = languages->repeat_interleave(options.num_beams, 0);
    }
    Session session(model, groups, expanded_ids, expanded_mask, local);
    out = beam_search(session, groups.world(), local, count, max_length, min_length);
  } else {
    Session session(model, groups, ids, mask, local);
    out = search(session, groups.world(), local, max_length, min_length, mine > 0 ? first : 0);
  }
  // Every rank's rows, padded to the longest.
  int64_t longest = 0;
  for (const auto& r : groups.dp().all_gather_ints({out.size(1)})) longest = std::max(longest, r[0]);
  if (out.size(1) < longest) {
    out = torch::cat({out, torch::full({out.size(0), longest - out.size(1)}, pad_id(options), torch::kLong)}, 1);
  }
  out = out.narrow(0, 0, mine).contiguous();
  return dp > 1 ? groups.dp().all_gather(out, rows) : out;
}

}  // namespace foldtron
