// The continuation the trainer prints after training: the prompt, encoded by the data's tokenizer,
// continued by logging.sample_tokens tokens (or until the tokenizer's EOS), greedily
// (sample_temperature 0) or sampled with the temperature, top-k and top-p the logging section
// gives, and decoded. Runs in any layout.
#pragma once

#include <string>

#include <torch/types.h>

#include "config/config.h"
#include "data/tokenizer.h"
#include "models/model.h"

namespace foldtron {

class ProcessGroups;

// The continuation (without the prompt); an id outside the tokenizer's vocabulary (the model's
// may be larger) becomes the tokenizer's unknown token (bytes: '?').
std::string sample_text(Model& model, ProcessGroups& groups, const LoggingConfig& logging,
                        const TextTokenizer& tokenizer, torch::Device device);

}  // namespace foldtron
