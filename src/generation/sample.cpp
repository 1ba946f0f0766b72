// The trainer's sample (see sample.h).
#include "generation/sample.h"

#include <torch/torch.h>

#include "generation/generate.h"

namespace foldtron {

std::string sample_text(Model& model, ProcessGroups& groups, const LoggingConfig& logging,
                        const TextTokenizer& tokenizer, torch::Device device) {
  const std::vector<int64_t> prompt = tokenizer.encode(logging.sample_prompt);
  GenerationOptions options;
  options.max_new_tokens = logging.sample_tokens;
  options.do_sample = logging.sample_temperature > 0;
  options.temperature = options.do_sample ? logging.sample_temperature : 1.0;
  options.top_k = logging.sample_top_k;
  options.top_p = logging.sample_top_p;
  options.seed = static_cast<uint64_t>(logging.sample_seed);
  if (tokenizer.eos_id() >= 0) options.eos_token_ids = {tokenizer.eos_id()};
  const torch::Tensor ids = torch::tensor(prompt, torch::kLong).reshape({1, -1}).to(device);
  const torch::Tensor out = generate(model, groups, ids, torch::Tensor(), options).cpu();  // [1, S + n]
  // Decoded with the prompt (a sentencepiece continuation's first space belongs to its first
  // piece), then the prompt's text cut off.
  std::vector<int64_t> all = prompt;
  for (int64_t i = ids.size(1); i < out.size(1); ++i) {
    const int64_t id = out[0][i].item<int64_t>();
    if (id == tokenizer.eos_id()) break;
    const bool known = id >= 0 && id < tokenizer.vocab_size();
    all.push_back(known ? id : (tokenizer.unk_id() >= 0 ? tokenizer.unk_id() : int64_t{'?'}));
  }
  std::string text = tokenizer.decode(all);
  const std::string prompt_text = tokenizer.decode(prompt);
  if (text.compare(0, prompt_text.size(), prompt_text) == 0) text.erase(0, prompt_text.size());
  model.train();
  return text;
}

}  // namespace foldtron
