// Generation defaults of a Hugging Face model directory: generation_config.json (decoder start,
// end-of-sequence and padding ids, bad words, forced end-of-sequence, beams, length penalty, early
// stopping, sampling settings, max_new_tokens), falling back to config.json's token ids as
// transformers does.
#pragma once

#include <string>

#include "generation/generate.h"

namespace foldtron {

// Options from `dir` (either file may be absent). CheckpointError for malformed JSON or values.
GenerationOptions read_generation_config(const std::string& dir);

}  // namespace foldtron
