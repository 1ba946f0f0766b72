// The trainer's sample (see sample.h).
#include "generation/sample.h"

#include <torch/torch.h>

#include "generation/generate.h"

namespace foldtron {

std::string sample_text(Model& model, ProcessGroups& groups, const LoggingConfig& logging, torch::Device device) {
  std::vector<int64_t> prompt;
  for (unsigned char c : logging.sample_prompt) prompt.push_back(c);
  GenerationOptions options;
  options.max_new_tokens = logging.sample_tokens;
  options.do_sample = logging.sample_temperature > 0;
  options.temperature = options.do_sample ? logging.sample_temperature : 1.0;
  options.top_k = logging.sample_top_k;
  options.top_p = logging.sample_top_p;
  options.seed = static_cast<uint64_t>(logging.sample_seed);
  const torch::Tensor ids = torch::tensor(prompt, torch::kLong).reshape({1, -1}).to(device);
  const torch::Tensor out = generate(model, groups, ids, torch::Tensor(), options);  // [1, S + n]
  std::string text;
  for (int64_t i = ids.size(1); i < out.size(1); ++i) {
    const int64_t id = out[0][i].item<int64_t>();
    text.push_back(id < 256 ? static_cast<char>(id) : '?');
  }
  model.train();
  return text;
}

}  // namespace foldtron
