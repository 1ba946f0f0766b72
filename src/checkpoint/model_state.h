// A model's tensors in and out of distributed checkpoints (distributed.h), and the save folder's
// protocol, shared by training's checkpoints (training/checkpointing.h) and the converters.
//
// A save folder DIR holds complete checkpoints DIR/iter_NNNNNNN and a file DIR/latest naming the
// newest. A checkpoint is written into DIR/iter_NNNNNNN.tmp (every rank its file, then rank 0 the
// metadata), renamed, and only then is `latest` replaced (atomically) and are the oldest beyond
// keep_last removed: a crash at any moment leaves the last complete checkpoint loadable.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/types.h>

#include "checkpoint/distributed.h"
#include "config/config.h"

namespace foldtron {

class Communicator;
class Model;
class ProcessGroups;

// Whether this rank writes its pieces of a tensor of layout `info`: one tensor-parallel replica,
// one data-parallel replica unless every data-parallel rank holds a shard of its own
// (`per_dp_shard`: the distributed optimizer's state), and the first stage's copy of a
// stage-tied table. Every element of every global tensor is thus written exactly once.
bool writes_pieces(const ParamInfo& info, ProcessGroups& groups, bool per_dp_shard);

// This rank's pieces of `local` (elements [begin, end) of its shard, values from `data`; see
// global_pieces) as items of global tensor `tensor`.
void add_items(std::vector<CheckpointItem>& items, const std::string& tensor, const torch::Tensor& local,
               const ParamInfo& info, int64_t begin = 0, int64_t end = -1, const torch::Tensor& data = {});

// The model's tensors this rank writes: "model/<name>" for every parameter and weight buffer (in
// the model's dtype), "buffer/<name>" for the routers' expert biases.
std::vector<CheckpointItem> model_items(Model& model, ProcessGroups& groups);

// Fills the elements [begin, end) of this rank's shard `local` (into `data`, see global_pieces)
// from global tensor `tensor`; CheckpointError naming it when the checkpoint lacks it or its shape
// differs from the model's.
void read_items(const CheckpointReader& reader, const std::string& tensor, const torch::Tensor& local,
                const ParamInfo& info, int64_t begin = 0, int64_t end = -1, const torch::Tensor& data = {});

// Loads every parameter, weight buffer and expert bias of `model` (this rank's shards) from the
// checkpoint, whatever layout it was saved in.
void read_model(Model& model, const CheckpointReader& reader);

// The keys of a layout that decide which ranks hold what (checkpoint states record it).
nlohmann::json layout_json(const ParallelConfig& parallel, int64_t world);
// "world 8 (tp 2 cp 1 pp 2 vpp 1 ep 4 etp 1, distributed optimizer)"
std::string layout_text(const nlohmann::json& layout);
// The layout the checkpoint `dir` (resolve_checkpoint) was saved under; "" when there is none.
std::string saved_layout_text(const std::string& dir);

// "iter_0000042"
std::string checkpoint_name(int64_t step);
// The checkpoint folder `dir` names: DIR/<latest> for a save folder, DIR itself for one
// checkpoint; empty when a save folder has no `latest` yet.
std::string resolve_checkpoint(const std::string& dir);
// DIR/NAME.tmp made empty by rank 0 (a crashed save's leftovers removed). Collective: when rank 0
// cannot, every rank throws the same CheckpointError.
std::string begin_checkpoint(Communicator& world, const std::string& root, const std::string& name);
// Completes DIR/NAME: every rank passes its files' descriptions (write_rank_files); rank 0 writes
// the metadata with `state`, renames the folder, updates `latest` and removes the oldest complete
// checkpoints beyond `keep_last` (0 keeps all); a step saved again replaces its folder in one
// atomic exchange. Collective: a failure on rank 0 throws the same CheckpointError on every rank.
void commit_checkpoint(Communicator& world, const std::string& root, const std::string& name,
                       const nlohmann::json& files_of_rank, const nlohmann::json& state, int64_t keep_last);
// Removes DIR/NAME.tmp of a save that failed (rank 0, best effort).
void abandon_checkpoint(Communicator& world, const std::string& root, const std::string& name);

}  // namespace foldtron
