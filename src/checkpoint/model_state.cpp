// A model's tensors in and out of distributed checkpoints, and the save folder (see model_state.h).
#include "checkpoint/model_state.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>

#include <fcntl.h>
#include <stdio.h>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include "checkpoint/distributed.h"
#include "core/errors.h"
#include "core/files.h"
#include "core/log.h"
#include "models/model.h"
#include "parallel/process_groups.h"

namespace foldtron {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

bool is_expert_bias(const std::string& name) {
  static const std::string suffix = "expert_bias";
  return name.size() >= suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

bool writes_pieces(const ParamInfo& info, ProcessGroups& groups, bool per_dp_shard) {
  const bool split = info.tp_split_dim >= 0 && info.split_size > 1;
  if (!split && (info.expert ? groups.etp() : groups.tp()).rank() != 0) return false;
  if (!per_dp_shard && (info.expert ? groups.edp() : groups.dp_cp()).rank() != 0) return false;
  return !info.stage_tied || groups.pp().rank() == 0;
}

void add_items(std::vector<CheckpointItem>& items, const std::string& tensor, const torch::Tensor& local,
               const ParamInfo& info, int64_t begin, int64_t end, const torch::Tensor& data) {
  const std::vector<int64_t> shape = global_shape(local, info);
  const torch::ScalarType dtype = (data.defined() ? data : local).scalar_type();
  for (GlobalPiece& piece : global_pieces(local, info, begin, end, data)) {
    items.push_back({tensor, shape, dtype, std::move(piece.box), piece.view.detach()});
  }
}

std::vector<CheckpointItem> model_items(Model& model, ProcessGroups& groups) {
  const ParamRegistry& registry = model.registry();
  std::vector<CheckpointItem> items;
  for (const auto& item : model.named_parameters()) {
    const ParamInfo info = registry.info(item.value());
    if (writes_pieces(info, groups, false)) add_items(items, "model/" + item.key(), item.value(), info);
  }
  for (const auto& item : model.named_buffers()) {
    // Weight buffers (in the registry) and the routers' biases; not recomputed tables or counters.
    const bool weight = registry.has(item.value());
    if (!weight && !is_expert_bias(item.key())) continue;
    const ParamInfo info = registry.info(item.value());
    if (writes_pieces(info, groups, false)) add_items(items, (weight ? "model/" : "buffer/") + item.key(), item.value(), info);
  }
  return items;
}

void read_items(const CheckpointReader& reader, const std::string& tensor, const torch::Tensor& local,
                const ParamInfo& info, int64_t begin, int64_t end, const torch::Tensor& data) {
  const std::string hint = "it was saved from another model; load a checkpoint of this model (its metadata.json "
                           "holds the config it was saved with)";
  if (!reader.has(tensor)) throw CheckpointError(fmt::format("checkpoint '{}' has no '{}'", reader.dir(), tensor), hint);
  const std::vector<int64_t> shape = global_shape(local, info);
  if (reader.shape(tensor) != shape) {
    throw CheckpointError(fmt::format("'{}' in '{}' has shape {}, but the model's is {}", tensor, reader.dir(),
                                      fmt::join(reader.shape(tensor), "x"), fmt::join(shape, "x")),
                          hint);
  }
  torch::NoGradGuard no_grad;
  for (const GlobalPiece& piece : global_pieces(local, info, begin, end, data)) reader.read(tensor, piece.box, piece.view);
}

void read_model(Model& model, const CheckpointReader& reader) {
  const ParamRegistry& registry = model.registry();
  for (const auto& item : model.named_parameters()) {
    read_items(reader, "model/" + item.key(), item.value(), registry.info(item.value()));
  }
  for (const auto& item : model.named_buffers()) {
    if (registry.has(item.value())) {
      read_items(reader, "model/" + item.key(), item.value(), registry.info(item.value()));
    } else if (is_expert_bias(item.key())) {
      // Saved by models trained with moe.expert_bias; a model without them starts at zero.
      if (reader.has("buffer/" + item.key())) read_items(reader, "buffer/" + item.key(), item.value(), ParamInfo{});
    }
  }
}

json layout_json(const ParallelConfig& p, int64_t world) {
  return {{"world", world}, {"tp", p.tp},   {"cp", p.cp},       {"pp", p.pp},
          {"vpp", p.vpp},   {"ep", p.ep},   {"etp", p.expert_tp()}, {"order", p.order},
          {"pipeline_layers", p.pipeline_layers}, {"distributed_optimizer", p.distributed_optimizer}};
}

std::string layout_text(const json& layout) {
  return fmt::format("world {} (tp {} cp {} pp {} vpp {} ep {} etp {}{})", layout.value("world", 0),
                     layout.value("tp", 0), layout.value("cp", 0), layout.value("pp", 0), layout.value("vpp", 0),
                     layout.value("ep", 0), layout.value("etp", 0),
                     layout.value("distributed_optimizer", false) ? ", distributed optimizer" : "");
}

std::string saved_layout_text(const std::string& dir) {
  const std::string path = resolve_checkpoint(dir);
  if (path.empty()) return "";
  try {
    return layout_text(CheckpointReader(path, false).state().value("layout", json::object()));
  } catch (const Error&) {
    return "";  // loading reports what is wrong with it
  }
}

std::string checkpoint_name(int64_t step) { return fmt::format("iter_{:07d}", step); }

std::string resolve_checkpoint(const std::string& dir) {
  if (fs::exists(fs::path(dir) / "metadata.json")) return dir;
  std::ifstream latest(fs::path(dir) / "latest");
  std::string name;
  if (!latest || !std::getline(latest, name) || name.empty()) return "";
  return (fs::path(dir) / name).string();
}

namespace {

// Every rank learns whether rank 0's part of a save failed (its message, or "" when it did not)
// and throws the same CheckpointError, so a failed save ends or is skipped on all ranks alike.
void agree_on_save(Communicator& world, const std::string& error_of_rank0, const std::string& name) {
  const std::string error = broadcast_string(world, error_of_rank0);
  if (error.empty()) return;
  throw CheckpointError(fmt::format("rank 0 could not save {}: {}", name, error),
                        "check that checkpoint.save names a writable place with free space; the last complete "
                        "checkpoint is untouched");
}

// Moves the complete checkpoint `from` into place at `to`. Where `to` exists (the same step saved
// again) the two are exchanged in one atomic rename, so `latest` never names a missing folder, and
// the old one goes afterwards.
void move_into_place(const fs::path& from, const fs::path& to) {
  std::error_code error;
  if (fs::exists(to, error)) {
    if (::renameat2(AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), RENAME_EXCHANGE) == 0) {
      if (const std::error_code removal = remove_tree(from)) {  // the replaced copy
        log::warning("checkpoint", "could not remove the replaced copy '{}': {}; the next save of this step removes it",
                     from.string(), removal.message());
      }
      return;
    }
    if (errno != EINVAL && errno != ENOSYS && errno != EOPNOTSUPP) {
      throw IoError(fmt::format("cannot exchange '{}' with '{}': {}", from.string(), to.string(), errno_text()),
                    "check the save folder; the checkpoint there is untouched");
    }
    // A filesystem without the exchange: a short window without it.
    if (const std::error_code removal = remove_tree(to)) {
      throw IoError(fmt::format("cannot remove '{}' to put its new copy in place: {}", to.string(), removal.message()),
                    fmt::format("check the save folder; the new checkpoint is complete in '{}'", from.string()));
    }
  }
  fs::rename(from, to, error);
  if (error) {
    throw IoError(fmt::format("cannot rename '{}' to '{}': {}", from.string(), to.string(), error.message()),
                  "check the save folder");
  }
}

}  // namespace

std::string begin_checkpoint(Communicator& world, const std::string& root, const std::string& name) {
  const std::string tmp = (fs::path(root) / (name + ".tmp")).string();
  std::string failure;
  if (world.rank() == 0) {
    std::error_code error;
    fs::create_directories(root, error);
    if (!error && (error = remove_tree(tmp))) {
      failure = fmt::format("cannot remove the leftovers of an earlier save '{}': {}", tmp, error.message());
    } else if (!error) {
      fs::create_directories(tmp, error);
    }
    if (error && failure.empty()) {
      failure = fmt::format("cannot create the checkpoint folder '{}': {}", tmp, error.message());
    }
  }
  agree_on_save(world, failure, name);
  return tmp;
}

void commit_checkpoint(Communicator& world, const std::string& root, const std::string& name, const json& files_of_rank,
                       const json& state, int64_t keep_last) {
  const std::vector<std::string> files = all_gather_strings(world, files_of_rank.dump());
  std::string failure;
  if (world.rank() == 0) {
    try {
      std::vector<json> descriptions;  // every rank's files, in rank order
      for (const std::string& f : files) {
        for (const json& one : json::parse(f)) descriptions.push_back(one);
      }
      const fs::path tmp = fs::path(root) / (name + ".tmp");
      write_metadata(tmp.string(), descriptions, state);
      sync_dir(tmp.string());
      move_into_place(tmp, fs::path(root) / name);
      sync_dir(root);
      write_file_atomically((fs::path(root) / "latest").string(), name + "\n");
    } catch (const std::exception& e) {
      failure = e.what();
    }
    // Only now do the oldest complete checkpoints beyond keep_last go.
    if (failure.empty() && keep_last > 0) {
      std::error_code error;
      std::vector<std::string> complete;
      static const std::regex iter(R"(iter_\d{7})");
      for (fs::directory_iterator entry(root, error), end; !error && entry != end; entry.increment(error)) {
        const std::string entry_name = entry->path().filename().string();
        std::error_code kind_error;  // an entry gone meanwhile is no reason to fail the save
        if (entry->is_directory(kind_error) && std::regex_match(entry_name, iter)) complete.push_back(entry_name);
      }
      std::sort(complete.begin(), complete.end());
      for (size_t i = 0; i + static_cast<size_t>(keep_last) < complete.size(); ++i) {
        if (complete[i] == name) continue;
        const fs::path old = fs::path(root) / complete[i];
        if (const std::error_code removal = remove_tree(old)) {
          log::warning("checkpoint", "could not remove the old checkpoint '{}' (keep_last {}): {}", old.string(),
                       keep_last, removal.message());
        }
      }
    }
  }
  agree_on_save(world, failure, name);
}

void abandon_checkpoint(Communicator& world, const std::string& root, const std::string& name) {
  if (world.rank() != 0) return;
  remove_tree(fs::path(root) / (name + ".tmp"));  // best effort: the next save of the step removes it too
}

}  // namespace foldtron
