// Language-model datasets over indexed data (indexed_dataset.h), Megatron-like (Megatron shuffles
// documents before cutting windows and rounds splits cumulatively; the rules here are below):
//   - the documents of a dataset are split into train/valid/test by shares (data.split,
//     "969,30,1"): consecutive runs of documents, sized by largest remainder;
//   - a GptDataset cuts a split's documents, concatenated, into windows of seq_length + 1 tokens
//     (stride seq_length: a window's last token is the next one's first), visited in a seeded
//     order that is reshuffled every epoch; sample indices run on across epochs;
//   - a BlendedDataset draws from several GptDatasets with weights (data.path
//     "0.7 A 0.3 B"): sample n goes to the dataset furthest below its share, so after any n
//     samples each dataset has had within one sample of weight x n, and the assignment of a
//     sample never depends on how many follow it (it is kept for every sample read so far:
//     about 10 bytes each). A blend with a dataset that has no training window is refused.
// Every sample is a pure function of (config, seed, split, index): ranks read only their own
// samples, the same seed gives the same data on every layout, and a run resumed at sample k reads
// exactly what an uninterrupted one would. The classes cache an epoch's order and the blend's
// assignments inside const calls: one thread per object (the trainer's).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <torch/types.h>

#include "data/indexed_dataset.h"

namespace foldtron {

struct DataConfig;

enum class Split { kTrain = 0, kValid = 1, kTest = 2 };
const char* split_name(Split split);

// Document ranges [begin, end) of train, valid and test for `shares` of `num_documents`.
std::array<std::pair<int64_t, int64_t>, 3> split_documents(int64_t num_documents, const std::array<double, 3>& shares);

class GptDataset {
 public:
  // Documents [first_document, end_document) of `data`.
  GptDataset(std::shared_ptr<const IndexedDataset> data, int64_t first_document, int64_t end_document,
             int64_t seq_length, uint64_t seed);

  int64_t num_windows() const { return num_windows_; }
  int64_t num_tokens() const { return end_ - begin_; }
  // The token offset (in the dataset's stream) where sample `index` starts.
  int64_t window_start(int64_t index) const;
  // Sample `index`: seq_length + 1 tokens into `out`.
  void window(int64_t index, int64_t* out) const;
  const IndexedDataset& data() const { return *data_; }

 private:
  std::shared_ptr<const IndexedDataset> data_;
  int64_t begin_ = 0, end_ = 0;  // token range of the documents
  int64_t seq_length_;
  uint64_t seed_;
  int64_t num_windows_ = 0;
  mutable int64_t cached_epoch_ = -1;
  mutable std::vector<int64_t> cached_order_;
};

class BlendedDataset {
 public:
  // `weights` positive, normalized here; every part must have windows.
  BlendedDataset(std::vector<GptDataset> parts, std::vector<double> weights);

  // (part, sample index within the part) of sample `index`.
  std::pair<int64_t, int64_t> locate(int64_t index) const;
  void window(int64_t index, int64_t* out) const;
  int64_t num_windows() const;
  const std::vector<GptDataset>& parts() const { return parts_; }
  const std::vector<double>& weights() const { return weights_; }

 private:
  std::vector<GptDataset> parts_;
  std::vector<double> weights_;
  mutable std::vector<int64_t> counts_;    // samples given to each part so far (the assignment's state)
  mutable std::vector<uint16_t> part_of_;  // assignments computed so far
  mutable std::vector<int64_t> within_;
};

// data.path as (weight, prefix) pairs: "P" is one prefix of weight 1, "W1 P1 W2 P2 ..." a blend.
// DataError naming the problem (an odd count, a weight that is not a positive number).
std::vector<std::pair<double, std::string>> parse_blend(const std::string& path);

// The language-model data a config names: for each split, a blend of the GptDatasets of the
// prefixes in data.path (or one GptDataset over text read as bytes; or synthetic tokens).
class LmCorpus {
 public:
  // `tokenizer_vocab`: the configured tokenizer's vocabulary, checked against what a dataset was
  // preprocessed with (its P.json, when there is one); `vocab_size`: the model's.
  LmCorpus(const DataConfig& data, int64_t seq_length, int64_t vocab_size, int64_t tokenizer_vocab, int64_t seed);

  // Windows in one epoch of a split (0: the split is empty).
  int64_t num_windows(Split split) const;
  // Samples [first, first + count) of a split as [count, seq_length + 1] int64; DataError when a
  // token is past the model's vocabulary.
  torch::Tensor batch(Split split, int64_t first, int64_t count) const;
  std::string describe() const { return description_; }

 private:
  int64_t seq_length_, vocab_size_, seed_;
  bool mock_ = false;
  std::string path_;  // data.path, for messages
  std::array<std::unique_ptr<BlendedDataset>, 3> splits_;
  std::string description_;
};

}  // namespace foldtron
