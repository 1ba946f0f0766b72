// Hugging Face config.json -> foldtron Config: the model and moe sections of a Llama, Mixtral,
// Qwen2-MoE, Qwen3-MoE or Marian model directory, so `foldtron forward/generate --model-dir`
// builds the same network that transformers builds. Anything foldtron cannot reproduce exactly (another model_type, an
// activation other than SiLU, scaled rotary, sliding-window attention, MLP or output-projection
// biases) is refused with a CheckpointError instead of being approximated.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "config/config.h"

namespace foldtron {

// The model_type values hf_model_config accepts.
const std::vector<std::string>& hf_supported_model_types();

// Reads `dir/config.json` into a default-constructed Config, filling config.model and config.moe
// (params_dtype fp32). Throws CheckpointError naming the file (and the key) when the file is
// missing or not JSON, a required key is missing or has the wrong type, or the model is not one
// foldtron can reproduce.
Config hf_model_config(const std::string& dir);
// The same from config.json's contents (`file` names it in messages).
Config hf_model_config_of(const nlohmann::json& root, const std::string& file);

// The config.json transformers would write for `config`'s model (the inverse of
// hf_model_config for what it reads). It does not check that the family can express the model:
// read it back with hf_model_config_of and compare (config/compare.h).
nlohmann::json hf_config_json(const Config& config);

}  // namespace foldtron
