// generation_config.json (see generation_config.h).
#include "generation/generation_config.h"

#include <filesystem>
#include <fstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/errors.h"

namespace foldtron {
namespace {

using nlohmann::json;

json read_json(const std::string& path) {
  std::ifstream in(path);
  if (!in) return json::object();
  try {
    json root = json::parse(in);
    if (!root.is_object()) throw CheckpointError(fmt::format("'{}' is not a JSON object", path), "write it again");
    return root;
  } catch (const json::exception& e) {  // parse_error, or out_of_range for a number beyond double
    throw CheckpointError(fmt::format("'{}' is not valid JSON ({})", path, e.what()), "copy or write it again");
  }
}

// An id or a list of ids ("eos_token_id": 1 or [1, 2]); empty when absent or null.
std::vector<int64_t> ids_of(const json& root, const std::string& key, const std::string& path) {
  if (!root.contains(key) || root.at(key).is_null()) return {};
  const json& v = root.at(key);
  if (v.is_number_integer()) return {v.get<int64_t>()};
  if (v.is_array() && std::all_of(v.begin(), v.end(), [](const json& x) { return x.is_number_integer(); })) {
    return v.get<std::vector<int64_t>>();
  }
  throw CheckpointError(fmt::format("'{}': '{}' is {}, expected an id or a list of ids", path, key, v.dump()),
                        "fix the value or export the config again");
}

template <typename T>
void read(const json& root, const std::string& key, const std::string& path, T& into) {
  if (!root.contains(key) || root.at(key).is_null()) return;
  try {
    into = root.at(key).get<T>();
  } catch (const json::exception&) {
    throw CheckpointError(fmt::format("'{}': '{}' has the wrong type ({})", path, key, root.at(key).dump()),
                          "fix the value or export the config again");
  }
}

}  // namespace

GenerationOptions read_generation_config(const std::string& dir) {
  namespace fs = std::filesystem;
  const std::string model_path = (fs::path(dir) / "config.json").string();
  const std::string generation_path = (fs::path(dir) / "generation_config.json").string();
  const json model = read_json(model_path), generation = read_json(generation_path);
  GenerationOptions options;
  options.top_k = 50;  // transformers' default, in effect when sampling
  // generation_config.json first, config.json for what it lacks.
  for (const auto& [root, path] : {std::pair{model, model_path}, std::pair{generation, generation_path}}) {
    if (const auto eos = ids_of(root, "eos_token_id", path); !eos.empty()) options.eos_token_ids = eos;
    if (const auto pad = ids_of(root, "pad_token_id", path); !pad.empty()) options.pad_token_id = pad.front();
    if (const auto start = ids_of(root, "decoder_start_token_id", path); !start.empty()) {
      options.decoder_start_token_id = start.front();
    }
    if (const auto forced = ids_of(root, "forced_eos_token_id", path); !forced.empty()) {
      options.forced_eos_token_id = forced.front();
    }
  }
  if (generation.contains("bad_words_ids") && !generation.at("bad_words_ids").is_null()) {
    read(generation, "bad_words_ids", generation_path, options.bad_words_ids);
  }
  read(generation, "num_beams", generation_path, options.num_beams);
  read(generation, "length_penalty", generation_path, options.length_penalty);
  read(generation, "max_length", generation_path, options.max_length);
  if (generation.contains("max_new_tokens") && !generation.at("max_new_tokens").is_null()) {
    read(generation, "max_new_tokens", generation_path, options.max_new_tokens);
    options.max_length = -1;  // max_new_tokens wins, as in transformers
  }
  read(generation, "do_sample", generation_path, options.do_sample);
  read(generation, "temperature", generation_path, options.temperature);
  read(generation, "top_k", generation_path, options.top_k);
  read(generation, "top_p", generation_path, options.top_p);
  if (generation.contains("early_stopping") && !generation.at("early_stopping").is_null()) {
    const json& v = generation.at("early_stopping");
    if (v.is_boolean()) {
      options.early_stopping = v.get<bool>() ? EarlyStopping::kTrue : EarlyStopping::kFalse;
    } else if (v.is_string() && v.get<std::string>() == "never") {
      options.early_stopping = EarlyStopping::kNever;
    } else {
      throw CheckpointError(fmt::format("'{}': early_stopping is {}, expected true, false or \"never\"",
                                        generation_path, v.dump()),
                            "fix the value");
    }
  }
  return options;
}

}  // namespace foldtron
