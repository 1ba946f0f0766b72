// Hardware profiles of the layout planner (hardware_profile.h): JSON in, with every field checked.
#include "training/hardware_profile.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/errors.h"
#include "core/text.h"

namespace foldtron {

namespace {

using Json = nlohmann::json;

// ---- the profile file ----

// A number of the profile: positive (sizes, times and rates feed logarithms and divisions), or
// at least zero where `zero_ok` (latencies, gaps, workspace).
double number(const Json& object, const char* key, const std::string& source, const std::string& where,
              bool zero_ok = false) {
  const auto it = object.find(key);
  if (it == object.end() || !it->is_number()) {
    throw UsageError(fmt::format("hardware profile {}: {} has no number '{}'", source, where, key),
                     "write the profile with bench/calibrate_planner.py (configs/hardware/h200.json shows every field)");
  }
  const double value = it->get<double>();
  if (!std::isfinite(value) || value < 0 || (value == 0 && !zero_ok)) {
    throw UsageError(fmt::format("hardware profile {}: {}.{} is {}, not a finite {} number", source, where, key, value,
                                 zero_ok ? "non-negative" : "positive"),
                     "rates, sizes and times are positive numbers");
  }
  return value;
}

std::string text_field(const Json& object, const char* key) {
  const auto it = object.find(key);
  return it != object.end() && it->is_string() ? it->get<std::string>() : std::string();
}

const Json& array_field(const Json& object, const char* key, const std::string& source) {
  const auto it = object.find(key);
  if (it == object.end() || !it->is_array() || it->empty()) {
    throw UsageError(fmt::format("hardware profile {}: '{}' is missing or empty", source, key),
                     "write the profile with bench/calibrate_planner.py (configs/hardware/h200.json shows every field)");
  }
  return *it;
}

std::vector<std::pair<double, double>> size_table(const Json& rows, const std::string& source, const char* key) {
  std::vector<std::pair<double, double>> table;
  for (const Json& row : rows) {
    if (!row.is_array() || row.size() != 2 || !row[0].is_number() || !row[1].is_number() ||
        row[0].get<double>() <= 0 || row[1].get<double>() <= 0) {
      throw UsageError(fmt::format("hardware profile {}: links.{} rows must be [bytes, microseconds]", source, key),
                       "each row is a message size and its measured time, both positive");
    }
    table.emplace_back(row[0].get<double>(), row[1].get<double>());
  }
  std::sort(table.begin(), table.end());
  return table;
}

HardwareProfile profile_from_json(const Json& root, const std::string& source) {
  if (!root.is_object()) {
    throw UsageError(fmt::format("hardware profile {} is not a JSON object", source),
                     "write the profile with bench/calibrate_planner.py");
  }
  HardwareProfile profile;
  if (root.contains("base")) {
    const std::string base = root["base"].is_string() ? root["base"].get<std::string>() : "";
    profile = builtin_hardware_profile(base);
  }
  const bool has_base = root.contains("base");
  // A field the profile sets replaces the base's; without a base every field must be there.
  const auto set = [&](double& field, const Json& object, const char* key, const std::string& where) {
    if (has_base && !object.contains(key)) return;
    field = number(object, key, source, where);
  };
  profile.name = text_field(root, "name").empty() ? profile.name : text_field(root, "name");
  profile.source = text_field(root, "measured").empty()
                       ? fmt::format("{}, from {}", source, profile.source)  // a base's rates, adjusted
                       : fmt::format("{} (measured {})", source, text_field(root, "measured"));
  set(profile.memory_gib, root, "memory_gib", "the profile");
  set(profile.peak_tflops, root, "peak_bf16_tflops", "the profile");
  set(profile.hbm_gbps, root, "hbm_gbps", "the profile");
  if (!has_base || root.contains("gpus_per_node")) {
    profile.gpus_per_node = static_cast<int64_t>(number(root, "gpus_per_node", source, "the profile"));
  }
  if (!has_base || root.contains("links")) {
    if (!root.contains("links") || !root["links"].is_object()) {
      throw UsageError(fmt::format("hardware profile {} has no 'links' object", source),
                       "give the NCCL times (links.all_reduce_us, links.all_to_all_us) as configs/hardware/h200.json "
                       "does, or \"base\": \"h200\" to take its links");
    }
    const Json& links = root["links"];
    profile.all_reduce_us = size_table(array_field(links, "all_reduce_us", source), source, "all_reduce_us");
    profile.all_to_all_us = size_table(array_field(links, "all_to_all_us", source), source, "all_to_all_us");
    profile.inter_node_gbps = number(links, "inter_node_gbps", source, "links");
    profile.inter_node_latency_us = number(links, "inter_node_latency_us", source, "links", true);
  }
  if (!has_base || root.contains("fitted")) {
    const Json& fitted = root.contains("fitted") ? root["fitted"] : Json::object();
    profile.memory_bound_gbps = number(fitted, "memory_bound_gbps", source, "fitted");
    profile.gap_ms_per_layer = number(fitted, "gap_ms_per_layer", source, "fitted", true);
    profile.workspace_gib = number(fitted, "workspace_gib", source, "fitted", true);
  }
  if (!has_base || root.contains("gemm")) {
    profile.gemm.clear();
    for (const Json& row : array_field(root, "gemm", source)) {
      profile.gemm.push_back({number(row, "m", source, "gemm"), number(row, "n", source, "gemm"),
                              number(row, "k", source, "gemm"), text_field(row, "pass"), number(row, "ms", source, "gemm")});
    }
  }
  if (!has_base || root.contains("grouped")) {
    profile.grouped.clear();
    for (const Json& row : array_field(root, "grouped", source)) {
      profile.grouped.push_back({number(row, "experts", source, "grouped"), number(row, "rows_per_expert", source, "grouped"),
                                 number(row, "hidden", source, "grouped"), number(row, "ffn", source, "grouped"),
                                 text_field(row, "pass"), number(row, "ms", source, "grouped")});
    }
  }
  if (!has_base || root.contains("attention")) {
    profile.attention.clear();
    for (const Json& row : array_field(root, "attention", source)) {
      profile.attention.push_back({number(row, "seq", source, "attention"), number(row, "heads", source, "attention"),
                                   number(row, "groups", source, "attention"), number(row, "head_dim", source, "attention"),
                                   number(row, "ms", source, "attention")});
    }
  }
  return profile;
}

}  // namespace

HardwareProfile parse_hardware_profile(const std::string& text, const std::string& source) {
  Json root;
  try {
    root = Json::parse(text);
  } catch (const Json::exception& e) {
    throw UsageError(fmt::format("hardware profile {} is not valid JSON: {}", source, e.what()),
                     "write the profile with bench/calibrate_planner.py");
  }
  return profile_from_json(root, source);
}

std::vector<std::string> builtin_hardware_names() {
  std::vector<std::string> names;
  for (const auto& [name, text] : embedded_hardware_profiles()) names.push_back(name);
  return names;
}

HardwareProfile builtin_hardware_profile(const std::string& gpu) {
  for (const auto& [name, text] : embedded_hardware_profiles()) {
    if (name == gpu) return parse_hardware_profile(text, "configs/hardware/" + name + ".json");
  }
  throw UsageError(fmt::format("no hardware profile '{}'", gpu),
                   fmt::format("choose one of {} with --gpu, or pass a measured one with --profile FILE",
                               join(builtin_hardware_names(), ", ")));
}

}  // namespace foldtron
