// Byte-level corpus and windowed dataset (see corpus.h).
#include "data/corpus.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>

#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>
#include <torch/torch.h>

#include "config/config.h"
#include "core/errors.h"

namespace foldtron {
namespace fs = std::filesystem;

std::vector<int64_t> read_byte_corpus(const std::string& path) {
  std::error_code error;
  if (!fs::exists(path, error)) {
    throw DataError(fmt::format("the corpus '{}' does not exist", path),
                    path == kDefaultCorpus ? "install the base-files package (it ships the license texts) or set "
                                             "data.path to a text file or folder, or use data.mock: true"
                                           : "set data.path to a text file or a folder of text files");
  }
  std::vector<fs::path> files;
  if (fs::is_directory(path)) {
    for (const auto& entry : fs::recursive_directory_iterator(path)) {
      if (entry.is_regular_file()) files.push_back(entry.path());
    }
    std::sort(files.begin(), files.end());
  } else {
    files.push_back(path);
  }
  std::vector<int64_t> tokens;
  for (const fs::path& file : files) {
    std::ifstream in(file, std::ios::binary);
    if (!in) throw DataError(fmt::format("cannot read '{}'", file.string()), "check its permissions");
    const std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    for (char c : bytes) tokens.push_back(static_cast<unsigned char>(c));
  }
  if (tokens.empty()) {
    throw DataError(fmt::format("the corpus '{}' holds no text", path), "point data.path at non-empty text files");
  }
  return tokens;
}

TokenDataset::TokenDataset(const DataConfig& data, int64_t seq_length, int64_t vocab_size, int64_t seed)
    : seq_length_(seq_length), seed_(seed), mock_(data.mock), vocab_size_(vocab_size) {
  if (mock_) {
    num_windows_ = int64_t{1} << 40;  // synthetic: never repeats within a run
    description_ = fmt::format("synthetic tokens (vocab {})", vocab_size);
    return;
  }
  const std::string path = data.path.empty() ? kDefaultCorpus : data.path;
  tokens_ = read_byte_corpus(path);
  num_windows_ = (static_cast<int64_t>(tokens_.size()) - 1) / seq_length;
  if (num_windows_ < 1) {
    throw DataError(fmt::format("the corpus '{}' has {} tokens, fewer than one window of {}", path, tokens_.size(),
                                seq_length + 1),
                    "use a larger corpus or a shorter train.seq_length");
  }
  description_ = fmt::format("{} ({} bytes, {} windows of {} tokens)", path, tokens_.size(), num_windows_,
                             seq_length + 1);
}

std::vector<int64_t> TokenDataset::order_for_epoch(int64_t epoch) const {
  at::Generator generator = at::detail::createCPUGenerator(static_cast<uint64_t>(seed_) * 1000003 + epoch);
  const torch::Tensor permutation = torch::randperm(num_windows_, generator, torch::kLong);
  return std::vector<int64_t>(permutation.data_ptr<int64_t>(), permutation.data_ptr<int64_t>() + num_windows_);
}

torch::Tensor TokenDataset::sample(int64_t index) const {
  if (mock_) {
    at::Generator generator = at::detail::createCPUGenerator(static_cast<uint64_t>(seed_) * 7777 + index);
    return torch::randint(0, vocab_size_, {seq_length_ + 1}, generator, torch::kLong);
  }
  const int64_t epoch = index / num_windows_;
  if (epoch != cached_epoch_) {
    cached_order_ = order_for_epoch(epoch);
    cached_epoch_ = epoch;
  }
  const int64_t start = cached_order_[static_cast<size_t>(index % num_windows_)] * seq_length_;
  return torch::tensor(std::vector<int64_t>(tokens_.begin() + start, tokens_.begin() + start + seq_length_ + 1),
                       torch::kLong);
}

torch::Tensor TokenDataset::batch(int64_t first, int64_t count) const {
  std::vector<torch::Tensor> rows;
  for (int64_t i = 0; i < count; ++i) rows.push_back(sample(first + i));
  return torch::stack(rows);
}

}  // namespace foldtron
