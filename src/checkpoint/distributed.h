// Distributed checkpoints of sharded tensors. A checkpoint is a folder:
//   rank_NNNNN.safetensors   each rank's pieces: boxes of global tensors (and its own raw tensors,
//   rank_NNNNN-k.safetensors such as RNG states, in the first), written by several threads per
//                            rank (one file each) and by all ranks in parallel
//   metadata.json            by rank 0: the format and its version, every global tensor's shape
//                            and dtype and which file holds which box of it, every file's size
//                            and checksum, and the caller's state (step, config, layout, ...)
// The metadata describes global tensors, never ranks: reading fills any box of a global tensor
// from whichever pieces cover it, so a checkpoint written in one parallel layout loads in any
// other. Files are checked (size, checksum) the first time a reader uses them. A reader is not
// thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/types.h>

#include "core/files.h"  // sync_dir, write_file_atomically
#include "parallel/sharding.h"

namespace foldtron {

class Communicator;

class SafetensorsFile;

constexpr int kCheckpointVersion = 1;
constexpr const char* kCheckpointFormat = "foldtron-checkpoint";

// One box of a global tensor that this rank writes.
struct CheckpointItem {
  std::string tensor;               // global name, e.g. "model/layers.0.self_attn.q_proj.weight"
  std::vector<int64_t> shape;       // the global tensor's
  torch::ScalarType dtype;          // as stored
  Box box;
  torch::Tensor data;               // [box.size...], any device, any strides
};

// This rank's files, written by `threads` threads at once: dir/rank_NNNNN.safetensors with the raw
// tensors `extra` (by key) and a share of `items`, and dir/rank_NNNNN-k.safetensors (k < threads)
// with the rest, the shares balanced by bytes (each thread copies from the device, checksums,
// writes and flushes its own file). Returns the files' descriptions for the metadata (name, size,
// checksum, the boxes each holds), a JSON array.
nlohmann::json write_rank_files(const std::string& dir, int64_t rank, const std::vector<CheckpointItem>& items,
                                const std::vector<std::pair<std::string, torch::Tensor>>& extra, int64_t threads = 1);
// Every rank's string, on every rank (collective over `group`).
std::vector<std::string> all_gather_strings(Communicator& group, const std::string& mine);
// `root`'s string, on every rank (collective over `group`; the others' `text` is ignored).
std::string broadcast_string(Communicator& group, const std::string& text, int root = 0);
// dir/metadata.json (atomically) from every rank's description and the caller's `state`.
void write_metadata(const std::string& dir, const std::vector<nlohmann::json>& files, const nlohmann::json& state);

class CheckpointReader {
 public:
  // Reads and checks dir/metadata.json: CheckpointError naming the folder when it is missing, not
  // a foldtron checkpoint, written by a newer format version, or inconsistent. `verify`: check
  // each file's size and checksum when first used.
  explicit CheckpointReader(std::string dir, bool verify = true);
  ~CheckpointReader();

  const std::string& dir() const { return dir_; }
  const nlohmann::json& state() const { return state_; }
  std::vector<std::string> tensors() const;  // sorted
  bool has(const std::string& tensor) const { return tensors_.count(tensor) > 0; }
  std::vector<int64_t> shape(const std::string& tensor) const;
  torch::ScalarType dtype(const std::string& tensor) const;
  // Fills `out` ([box.size...], any device and dtype, possibly strided) with that box of
  // `tensor`. CheckpointError when the tensor is absent or its pieces do not cover the box.
  void read(const std::string& tensor, const Box& box, const torch::Tensor& out) const;
  // The whole global tensor, on the CPU in its stored dtype.
  torch::Tensor read_full(const std::string& tensor) const;
  int64_t num_files() const { return static_cast<int64_t>(files_.size()); }
  // Raw tensor `key` of rank `rank`'s file; undefined when absent.
  torch::Tensor rank_tensor(int64_t rank, const std::string& key) const;
  // Checks every file's size and checksum now (verify even when not every file is read).
  void verify_all() const { verify_share(0, 1); }
  // Checks the files f with f % ranks == rank, `threads` at a time: the ranks of a job split the
  // reading (each file read once) and agree on the outcome themselves. A verified file is not
  // checked again.
  void verify_share(int64_t rank, int64_t ranks, int64_t threads = 1) const;
  // Bytes read from the files so far (checksums and pieces).
  uint64_t bytes_read() const { return bytes_read_; }

 private:
  struct Piece {
    int64_t file;
    std::string key;
    Box box;
  };
  struct TensorEntry {
    std::vector<int64_t> shape;
    torch::ScalarType dtype;
    std::vector<Piece> pieces;
  };
  struct File {
    std::string name;
    uint64_t bytes = 0;
    uint64_t checksum = 0;
  };
  const SafetensorsFile& file(int64_t index) const;
  void check_size(const File& f) const;
  // CheckpointError when file `index` does not match its size or checksum; returns its bytes.
  uint64_t check_file(int64_t index) const;
  void verify_file(int64_t index) const;

  std::string dir_;
  bool verify_;
  nlohmann::json state_;
  std::map<std::string, TensorEntry> tensors_;
  std::vector<File> files_;
  mutable std::map<int64_t, std::unique_ptr<SafetensorsFile>> open_;  // opened files
  mutable std::vector<char> verified_;
  mutable uint64_t bytes_read_ = 0;
  // The piece read last (reading an expert stack expert by expert reads one piece many times).
  mutable std::pair<int64_t, std::string> cached_key_{-1, ""};
  mutable torch::Tensor cached_;
};

// Verifies every file of `reader`'s checkpoint, the ranks of `world` splitting the files (each read
// once), and agrees on the outcome: every rank throws the same CheckpointError, naming the file
// the first failing rank found and what is wrong with it. Nothing is read before this returns.
void verify_together(const CheckpointReader& reader, Communicator& world, int64_t threads = 1);

}  // namespace foldtron
