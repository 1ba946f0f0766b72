// The safetensors file format (https://github.com/huggingface/safetensors) and Hugging Face
// model directories built from it.
//
// A file is: 8 bytes little-endian u64 N, then N bytes of JSON header
//   {"<name>": {"dtype": "F32", "shape": [d0, d1, ...], "data_offsets": [begin, end]}, ...,
//    "__metadata__": {"<key>": "<string>"}}   (optional)
// padded with spaces, then the raw little-endian tensor data; offsets count from the first byte
// after the header. SafetensorsFile parses and validates the header once and reads one tensor at
// a time (seek + read of its bytes only: real checkpoints are tens of GB). write_safetensors
// writes a file atomically (temporary file, fsync, rename). HfCheckpoint reads a model directory
// holding model.safetensors or model.safetensors.index.json plus its shards.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <torch/types.h>

#include "core/files.h"

namespace foldtron {

class Checksum;
class IoError;

// One safetensors file, header parsed and checked on open. load() opens its own stream, so
// concurrent loads from one SafetensorsFile are safe.
class SafetensorsFile {
 public:
  // Throws CheckpointError (naming the file and the problem) for a file that is missing, too
  // short, or whose header is invalid.
  explicit SafetensorsFile(std::string path);

  const std::string& path() const { return path_; }
  std::vector<std::string> names() const;  // sorted
  bool has(const std::string& name) const { return entries_.count(name) > 0; }
  std::vector<int64_t> shape(const std::string& name) const;
  torch::ScalarType dtype(const std::string& name) const;
  // The tensor as a new CPU tensor of its stored dtype and shape. CheckpointError when absent.
  torch::Tensor load(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  struct Entry {
    torch::ScalarType dtype;
    std::vector<int64_t> shape;
    uint64_t begin;  // byte offsets relative to data_start_
    uint64_t end;
  };
  const Entry& entry(const std::string& name) const;

  std::string path_;
  uint64_t data_start_ = 0;  // 8 + header length
  std::map<std::string, Entry> entries_;
  std::map<std::string, std::string> metadata_;
};

struct WrittenFile {
  uint64_t checksum = 0;  // core/checksum.h's, of the whole file
  uint64_t bytes = 0;
};

// Writes a safetensors file one tensor at a time, so a file larger than memory can be streamed:
// the header (from the declared entries) first, then each tensor's data in order(). The data goes
// to `path + ".tmp"`, which finish() flushes to disk and renames over `path`, so `path` never
// holds a half-written file (a writer destroyed unfinished removes the temporary file). Throws
// CheckpointError for a duplicate name, an unsupported dtype or a tensor other than the one
// declared next, IoError when the file cannot be written.
class SafetensorsWriter {
 public:
  struct Entry {
    std::string name;
    torch::ScalarType dtype;
    std::vector<int64_t> shape;
  };
  SafetensorsWriter(std::string path, std::vector<Entry> entries, const std::map<std::string, std::string>& metadata = {});
  ~SafetensorsWriter();
  SafetensorsWriter(const SafetensorsWriter&) = delete;
  SafetensorsWriter& operator=(const SafetensorsWriter&) = delete;

  // The entries in the order their data is written (larger elements first, then by name, as
  // the reference writer stores them).
  const std::vector<Entry>& order() const { return entries_; }
  // The data of the next entry in order() (any device, any strides; its dtype and shape).
  void write(const torch::Tensor& tensor);
  WrittenFile finish();

 private:
  void put(const void* data, uint64_t size);

  std::string path_;
  std::vector<Entry> entries_;
  size_t next_ = 0;
  std::unique_ptr<AtomicFile> file_;  // null once finished
  uint64_t bytes_ = 0;
  std::unique_ptr<Checksum> checksum_;
};

// Writes `tensors` (any device, any layout) and `metadata` to `path` with a SafetensorsWriter.
WrittenFile write_safetensors(const std::string& path, const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                              const std::map<std::string, std::string>& metadata = {});

// A Hugging Face model directory: `dir/model.safetensors`, or `dir/model.safetensors.index.json`
// whose "weight_map" maps each tensor name to a shard file in `dir`. Shards are opened on first
// use and kept open (header only). Not thread-safe (the shard cache is filled lazily).
class HfCheckpoint {
 public:
  // Throws CheckpointError naming the directory when it holds neither file, when the index is
  // invalid, or when a shard it names does not exist.
  explicit HfCheckpoint(std::string dir);

  const std::string& dir() const { return dir_; }
  std::vector<std::string> names() const;  // sorted
  bool has(const std::string& name) const { return weight_map_.count(name) > 0; }
  std::vector<int64_t> shape(const std::string& name) const;
  torch::ScalarType dtype(const std::string& name) const;
  // CheckpointError naming the tensor and the directory when absent.
  torch::Tensor load(const std::string& name) const;

 private:
  const SafetensorsFile& file_of(const std::string& name) const;

  std::string dir_;
  std::map<std::string, std::string> weight_map_;  // tensor name -> shard file name in dir_
  mutable std::map<std::string, std::unique_ptr<SafetensorsFile>> shards_;  // by file name
};

// The safetensors spelling of a dtype ("F32", "BF16", ...); CheckpointError when unsupported.
std::string safetensors_dtype_name(torch::ScalarType dtype);
// The dtype of a safetensors spelling; CheckpointError naming `where` when unknown.
torch::ScalarType safetensors_dtype(const std::string& name, const std::string& where);

}  // namespace foldtron
