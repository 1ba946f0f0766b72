// Training data for the language model: a byte-level token stream from text files (by default
// the English license texts every Debian-family system carries in /usr/share/common-licenses),
// cut into windows of seq_length + 1 tokens, visited in a seeded order that depends only on the
// seed (not on the layout), so the same seed and global batch give the same batches everywhere
// and a resumed run continues the same stream. Synthetic tokens (data.mock) for benchmarks.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <torch/types.h>

namespace foldtron {

struct DataConfig;

// Bytes of every regular file under `path` (a file or a directory, read recursively in name
// order) as tokens 0..255. Throws DataError naming the path when nothing can be read.
std::vector<int64_t> read_byte_corpus(const std::string& path);

constexpr const char* kDefaultCorpus = "/usr/share/common-licenses";

class TokenDataset {
 public:
  // Windows of seq_length + 1 tokens, stride seq_length; mock: `mock_windows` random windows.
  TokenDataset(const DataConfig& data, int64_t seq_length, int64_t vocab_size, int64_t seed);

  int64_t num_windows() const { return num_windows_; }
  // The window of the global sample index (0, 1, 2, ... across epochs): [seq_length + 1] int64.
  torch::Tensor sample(int64_t index) const;
  // Samples [first, first + count) stacked as [count, seq_length + 1].
  torch::Tensor batch(int64_t first, int64_t count) const;
  std::string describe() const { return description_; }

 private:
  std::vector<int64_t> order_for_epoch(int64_t epoch) const;

  std::vector<int64_t> tokens_;
  int64_t seq_length_;
  int64_t num_windows_ = 0;
  int64_t seed_;
  bool mock_ = false;
  int64_t vocab_size_;
  std::string description_;
  mutable int64_t cached_epoch_ = -1;
  mutable std::vector<int64_t> cached_order_;
};

}  // namespace foldtron
