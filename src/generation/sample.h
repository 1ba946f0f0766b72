// The continuation the trainer prints after training: the prompt's bytes (the byte-level
// tokenizer) continued by logging.sample_tokens tokens, greedily (sample_temperature 0) or sampled
// with the temperature, top-k and top-p the logging section gives. Runs in any layout.
#pragma once

#include <string>

#include <torch/types.h>

#include "config/config.h"
#include "models/model.h"

namespace foldtron {

class ProcessGroups;

// The continuation (without the prompt); bytes past 255 are written as '?'.
std::string sample_text(Model& model, ProcessGroups& groups, const LoggingConfig& logging, torch::Device device);

}  // namespace foldtron
