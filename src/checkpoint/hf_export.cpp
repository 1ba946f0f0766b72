// foldtron checkpoint -> Hugging Face model directory (see hf_export.h).
#include "checkpoint/hf_export.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include <fmt/format.h>
#include <torch/torch.h>

#include "checkpoint/distributed.h"
#include "checkpoint/hf_config.h"
#include "checkpoint/hf_import.h"
#include "checkpoint/hf_names.h"
#include "checkpoint/model_state.h"
#include "checkpoint/safetensors.h"
#include "config/compare.h"
#include "config/config_load.h"
#include "core/errors.h"
#include "core/files.h"
#include "core/log.h"
#include "parallel/communicator.h"

namespace foldtron {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// One tensor of the export: where its values come from and how it is stored.
struct Planned {
  HfPart part;
  std::string tensor;  // the checkpoint's global tensor
  torch::ScalarType dtype;
  int64_t bytes = 0;
};

// Names with their numbers compared as numbers (layers.2 before layers.10), as a reader expects.
bool natural_less(const std::string& a, const std::string& b) {
  size_t i = 0, j = 0;
  while (i < a.size() && j < b.size()) {
    if (std::isdigit(static_cast<unsigned char>(a[i])) && std::isdigit(static_cast<unsigned char>(b[j]))) {
      size_t ei = i, ej = j;
      while (ei < a.size() && std::isdigit(static_cast<unsigned char>(a[ei]))) ++ei;
      while (ej < b.size() && std::isdigit(static_cast<unsigned char>(b[ej]))) ++ej;
      const std::string na = a.substr(i, ei - i), nb = b.substr(j, ej - j);
      if (na.size() != nb.size()) return na.size() < nb.size();
      if (na != nb) return na < nb;
      i = ei, j = ej;
      continue;
    }
    if (a[i] != b[j]) return a[i] < b[j];
    ++i, ++j;
  }
  return a.size() - i < b.size() - j;
}

json read_json_file(const fs::path& path) {
  std::ifstream in(path);
  try {
    return json::parse(in);
  } catch (const json::exception& e) {  // parse_error, or out_of_range for a number beyond double
    throw CheckpointError(fmt::format("'{}' is not valid JSON ({})", path.string(), e.what()),
                          "copy or download the file again");
  }
}

// config.json for the export: the one the model came with, or one made from its config; either
// way read back and compared with the model, which must be the same network.
json export_config(const Config& config, const json& origin, const std::string& dir) {
  const bool carried = origin.contains("config");
  const json out = carried ? origin.at("config") : hf_config_json(config);
  const Config back = hf_model_config_of(out, carried ? "the config.json it was converted from" : "its config.json");
  std::string differences;
  for (const ModelDifference& d : model_differences(config, back)) {
    differences += fmt::format("\n  - {} {} (the checkpoint) vs {} (Hugging Face)", d.key, d.a, d.b);
  }
  if (!differences.empty()) {
    throw CheckpointError(fmt::format("checkpoint '{}' cannot be written as a Hugging Face {} model: its config.json "
                                      "would describe another network:{}",
                                      dir, enum_name(config.model.architecture), differences),
                          "export models whose settings the family's transformers class has (docs/checkpoints.md "
                          "lists them)");
  }
  return out;
}

// The tensors of the export in file order, each with its dtype.
std::vector<Planned> plan_tensors(const CheckpointReader& reader, const Config& config, const json& origin) {
  const HfExperts experts =
      origin.value("experts", std::string("per_expert")) == "fused" ? HfExperts::kFused : HfExperts::kPerExpert;
  const json dtypes = origin.value("dtypes", json::object());
  std::vector<Planned> plan;
  std::vector<std::string> unnamed;
  std::set<std::string> names;
  for (const std::string& tensor : reader.tensors()) {
    if (tensor.rfind("model/", 0) != 0) continue;  // optimizer state, expert biases (compared above)
    const std::vector<HfPart> parts =
        hf_parts(config.model.architecture, tensor.substr(6), reader.shape(tensor), experts);
    if (parts.empty()) unnamed.push_back(tensor.substr(6));
    for (const HfPart& part : parts) {
      const torch::ScalarType dtype = dtypes.contains(part.name)
                                          ? safetensors_dtype(dtypes.at(part.name).get<std::string>(), reader.dir())
                                          : reader.dtype(tensor);
      FT_CHECK(names.insert(part.name).second, "two tensors export as " + part.name);
      plan.push_back({part, tensor, dtype, part.box.numel() * static_cast<int64_t>(c10::elementSize(dtype))});
    }
  }
  if (!unnamed.empty()) {
    std::string list;
    for (const std::string& name : unnamed) list += "\n  - " + name;
    throw CheckpointError(fmt::format("checkpoint '{}' holds tensors that Hugging Face's {} has no place for:{}",
                                      reader.dir(), enum_name(config.model.architecture), list),
                          "export models of the Hugging Face families' shapes (no language embeddings or learned "
                          "positions in Marian)");
  }
  std::sort(plan.begin(), plan.end(), [](const Planned& a, const Planned& b) { return natural_less(a.part.name, b.part.name); });
  return plan;
}

// Shards in order, each filled up to `max_bytes` (a tensor larger than that gets one of its own).
std::vector<std::vector<Planned>> split_shards(const std::vector<Planned>& plan, int64_t max_bytes) {
  std::vector<std::vector<Planned>> shards(1);
  int64_t filled = 0;
  for (const Planned& p : plan) {
    if (!shards.back().empty() && filled + p.bytes > max_bytes) {
      shards.emplace_back();
      filled = 0;
    }
    shards.back().push_back(p);
    filled += p.bytes;
  }
  return shards;
}

std::string shard_name(size_t index, size_t count) {
  return count == 1 ? "model.safetensors"
                    : fmt::format("model-{:05d}-of-{:05d}.safetensors", index + 1, count);
}

// One shard file, tensor by tensor.
void write_shard(const CheckpointReader& reader, const std::vector<Planned>& shard, const std::string& path) {
  std::vector<SafetensorsWriter::Entry> entries;
  std::map<std::string, const Planned*> by_name;
  for (const Planned& p : shard) {
    entries.push_back({p.part.name, p.dtype, p.part.shape});
    by_name[p.part.name] = &p;
  }
  SafetensorsWriter writer(path, std::move(entries), {{"format", "pt"}});
  for (const SafetensorsWriter::Entry& entry : writer.order()) {
    const Planned& p = *by_name.at(entry.name);
    torch::Tensor values = torch::empty(p.part.box.size, torch::TensorOptions().dtype(reader.dtype(p.tensor)));
    reader.read(p.tensor, p.part.box, values);
    writer.write(values.reshape(p.part.shape).to(p.dtype));
  }
  writer.finish();
}

void write_json(const fs::path& path, const json& value) {
  write_file_atomically(path.string(), value.dump(2) + "\n");
}

}  // namespace

json hf_origin(const std::string& dir) {
  const HfCheckpoint checkpoint(dir);
  json origin{{"config", read_json_file(fs::path(dir) / "config.json")},
              {"experts", hf_expert_layout(checkpoint) == HfExperts::kFused ? "fused" : "per_expert"}};
  if (fs::exists(fs::path(dir) / "generation_config.json")) {
    origin["generation_config"] = read_json_file(fs::path(dir) / "generation_config.json");
  }
  json dtypes = json::object();
  for (const std::string& name : checkpoint.names()) dtypes[name] = safetensors_dtype_name(checkpoint.dtype(name));
  origin["dtypes"] = dtypes;
  return origin;
}

void export_hf(const CheckpointReader& reader, const std::string& out, Communicator& world,
               const HfExportOptions& options) {
  const json& state = reader.state();
  Config config;
  try {
    config = load_config(ConfigSources{}, state.value("config", std::string()));
  } catch (const Error& e) {
    throw CheckpointError(fmt::format("the config saved in '{}' does not load: {}", reader.dir(), e.what()),
                          "it was written by another foldtron version; export it with that version");
  }
  const json origin = state.value("hf", json::object());
  const json config_json = export_config(config, origin, reader.dir());
  const std::vector<Planned> plan = plan_tensors(reader, config, origin);
  const std::vector<std::vector<Planned>> shards = split_shards(plan, options.max_shard_bytes);

  std::error_code error;
  if (fs::exists(out, error) && !fs::is_empty(out, error)) {
    throw IoError(fmt::format("the output folder '{}' exists and is not empty", out),
                  "choose a new folder (the export never overwrites one)");
  }
  const std::string tmp = out + ".tmp";
  world.barrier();  // every rank checked before rank 0 creates anything
  if (world.rank() == 0) {
    if ((error = remove_tree(tmp))) {
      throw IoError(fmt::format("cannot remove the leftovers of an earlier export '{}': {}", tmp, error.message()),
                    "remove that folder, or check the disk");
    }
    fs::create_directories(tmp, error);
    if (error) throw IoError(fmt::format("cannot create '{}': {}", tmp, error.message()), "check that the place is writable");
  }
  world.barrier();
  for (size_t s = static_cast<size_t>(world.rank()); s < shards.size(); s += static_cast<size_t>(world.size())) {
    write_shard(reader, shards[s], (fs::path(tmp) / shard_name(s, shards.size())).string());
  }
  world.barrier();
  if (world.rank() == 0) {
    write_json(fs::path(tmp) / "config.json", config_json);
    json generation = origin.value("generation_config", json());
    if (generation.is_null() && config.model.encoder_decoder()) {
      generation = json::object();
      if (config.model.decoder_start_token_id >= 0) generation["decoder_start_token_id"] = config.model.decoder_start_token_id;
      if (config.model.pad_token_id >= 0) generation["pad_token_id"] = config.model.pad_token_id;
    }
    if (!generation.is_null()) write_json(fs::path(tmp) / "generation_config.json", generation);
    if (shards.size() > 1) {
      json weight_map = json::object();
      int64_t total = 0;
      for (size_t s = 0; s < shards.size(); ++s) {
        for (const Planned& p : shards[s]) {
          weight_map[p.part.name] = shard_name(s, shards.size());
          total += p.bytes;
        }
      }
      write_json(fs::path(tmp) / "model.safetensors.index.json",
                 {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}});
    }
    if ((error = remove_tree(out))) {  // an empty folder
      throw IoError(fmt::format("cannot remove the empty folder '{}' to put the export there: {}", out, error.message()),
                    fmt::format("the export is complete in '{}'", tmp));
    }
    fs::rename(tmp, out, error);
    if (error) throw IoError(fmt::format("cannot rename '{}' to '{}': {}", tmp, out, error.message()), "check the folder");
    log::info("convert", "wrote {} ({} tensors in {} file{}, {:.3f} GB)", out, plan.size(), shards.size(),
              shards.size() == 1 ? "" : "s", [&] {
                double bytes = 0;
                for (const Planned& p : plan) bytes += static_cast<double>(p.bytes);
                return bytes / 1e9;
              }());
  }
  world.barrier();
}

}  // namespace foldtron
