// Language-model datasets (see gpt_dataset.h).
#include "data/gpt_dataset.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <sstream>

#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "config/config.h"
#include "core/errors.h"
#include "core/log.h"
#include "data/corpus.h"

namespace foldtron {
namespace fs = std::filesystem;

const char* split_name(Split split) {
  switch (split) {
    case Split::kTrain:
      return "train";
    case Split::kValid:
      return "valid";
    case Split::kTest:
      return "test";
  }
  return "?";
}

std::array<std::pair<int64_t, int64_t>, 3> split_documents(int64_t num_documents, const std::array<double, 3>& shares) {
  const double total = shares[0] + shares[1] + shares[2];
  FT_CHECK(total > 0, "split shares must not all be 0");
  // Largest remainder: floor of each exact share, then the leftover documents to the largest
  // fractions (earlier splits first on ties).
  std::array<int64_t, 3> counts{};
  std::array<double, 3> remainders{};
  int64_t given = 0;
  for (size_t i = 0; i < 3; ++i) {
    const double exact = shares[i] / total * static_cast<double>(num_documents);
    counts[i] = static_cast<int64_t>(std::floor(exact));
    remainders[i] = exact - static_cast<double>(counts[i]);
    given += counts[i];
  }
  std::array<size_t, 3> order{0, 1, 2};
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return remainders[a] > remainders[b]; });
  for (size_t k = 0; given < num_documents; ++k, ++given) ++counts[order[k % 3]];
  std::array<std::pair<int64_t, int64_t>, 3> ranges;
  int64_t begin = 0;
  for (size_t i = 0; i < 3; ++i) {
    ranges[i] = {begin, begin + counts[i]};
    begin += counts[i];
  }
  return ranges;
}

GptDataset::GptDataset(std::shared_ptr<const IndexedDataset> data, int64_t first_document, int64_t end_document,
                       int64_t seq_length, uint64_t seed)
    : data_(std::move(data)), seq_length_(seq_length), seed_(seed) {
  FT_CHECK(first_document >= 0 && first_document <= end_document && end_document <= data_->num_documents(),
           "document range out of bounds");
  begin_ = data_->document_start(first_document);
  end_ = data_->document_start(end_document);
  num_windows_ = end_ - begin_ > seq_length_ ? (end_ - begin_ - 1) / seq_length_ : 0;
}

int64_t GptDataset::window_start(int64_t index) const {
  FT_CHECK(num_windows_ > 0 && index >= 0, "window of an empty dataset or a negative index");
  const int64_t epoch = index / num_windows_;
  if (epoch != cached_epoch_) {
    at::Generator generator = at::detail::createCPUGenerator(seed_ * 1000003 + static_cast<uint64_t>(epoch));
    const torch::Tensor permutation = torch::randperm(num_windows_, generator, torch::kLong);
    cached_order_.assign(permutation.data_ptr<int64_t>(), permutation.data_ptr<int64_t>() + num_windows_);
    cached_epoch_ = epoch;
  }
  return begin_ + cached_order_[static_cast<size_t>(index % num_windows_)] * seq_length_;
}

void GptDataset::window(int64_t index, int64_t* out) const { data_->read(window_start(index), seq_length_ + 1, out); }

BlendedDataset::BlendedDataset(std::vector<GptDataset> parts, std::vector<double> weights)
    : parts_(std::move(parts)), weights_(std::move(weights)), counts_(parts_.size(), 0) {
  FT_CHECK(!parts_.empty() && parts_.size() == weights_.size() && parts_.size() < 65536, "blend of no datasets");
  const double total = std::accumulate(weights_.begin(), weights_.end(), 0.0);
  for (double& w : weights_) w /= total;
}

std::pair<int64_t, int64_t> BlendedDataset::locate(int64_t index) const {
  FT_CHECK(index >= 0, "negative sample index");
  if (parts_.size() == 1) return {0, index};
  // Extend the assignment up to `index`: each sample to the part furthest below its share.
  while (static_cast<int64_t>(part_of_.size()) <= index) {
    const double n = static_cast<double>(part_of_.size() + 1);
    size_t best = 0;
    double best_gap = -1e300;
    for (size_t d = 0; d < parts_.size(); ++d) {
      const double gap = weights_[d] * n - static_cast<double>(counts_[d]);
      if (gap > best_gap) {
        best_gap = gap;
        best = d;
      }
    }
    part_of_.push_back(static_cast<uint16_t>(best));
    within_.push_back(counts_[best]++);
  }
  return {part_of_[static_cast<size_t>(index)], within_[static_cast<size_t>(index)]};
}

void BlendedDataset::window(int64_t index, int64_t* out) const {
  const auto [part, within] = locate(index);
  parts_[static_cast<size_t>(part)].window(within, out);
}

int64_t BlendedDataset::num_windows() const {
  int64_t total = 0;
  for (const GptDataset& part : parts_) total += part.num_windows();
  return total;
}

std::vector<std::pair<double, std::string>> parse_blend(const std::string& path) {
  std::vector<std::string> words;
  std::istringstream in(path);
  for (std::string word; in >> word;) words.push_back(word);
  if (words.size() == 1) return {{1.0, words[0]}};
  if (words.empty() || words.size() % 2 != 0) {
    throw DataError(fmt::format("data.path '{}' is neither one path nor weight-prefix pairs", path),
                    "write one prefix, or a blend such as '0.7 data/web 0.3 data/books'");
  }
  std::vector<std::pair<double, std::string>> blend;
  for (size_t i = 0; i < words.size(); i += 2) {
    char* end = nullptr;
    const double weight = std::strtod(words[i].c_str(), &end);
    if (end == words[i].c_str() || *end != '\0' || !(weight > 0) || !std::isfinite(weight)) {
      throw DataError(fmt::format("data.path '{}': '{}' is not a positive weight", path, words[i]),
                      "write a blend as weight-prefix pairs, such as '0.7 data/web 0.3 data/books'");
    }
    blend.emplace_back(weight, words[i + 1]);
  }
  return blend;
}

namespace {

// Checks the dataset's P.json (written by foldtron preprocess; Megatron's data has none).
void check_preprocessed_with(const std::string& prefix, int64_t tokenizer_vocab, int64_t vocab_size) {
  const std::string path = prefix + ".json";
  std::ifstream in(path);
  if (!in) return;
  const nlohmann::json meta = nlohmann::json::parse(in, nullptr, false);
  if (meta.is_discarded() || !meta.is_object()) {
    throw DataError(fmt::format("'{}' is not valid JSON", path), "remove it, or run foldtron preprocess again");
  }
  const int64_t vocab = meta.value("vocab_size", int64_t{-1});
  if (tokenizer_vocab > 0 && vocab > 0 && vocab != tokenizer_vocab) {
    throw DataError(fmt::format("'{}' was preprocessed with a tokenizer of {} ids ({}), but the configured one has {}",
                                prefix, vocab, meta.value("tokenizer", std::string("?")), tokenizer_vocab),
                    "set data.tokenizer and data.tokenizer_model to the tokenizer the data was preprocessed with");
  }
  const size_t fields = meta.contains("fields") && meta["fields"].is_array() ? meta["fields"].size() : 1;
  const bool labelled = meta.contains("labels") && meta["labels"].is_array() && !meta["labels"].empty();
  if (fields > 1 || labelled) {
    throw DataError(fmt::format("'{}' holds {} examples, not language-model text", prefix,
                                labelled ? "labelled" : "multi-field"),
                    "preprocess the text with one --json-key (or plain text) for language modelling");
  }
  if (vocab > vocab_size) {
    throw DataError(fmt::format("'{}' holds ids of a {}-id vocabulary, more than model.vocab_size {}", prefix, vocab,
                                vocab_size),
                    fmt::format("set model.vocab_size to at least {}", vocab));
  }
}

}  // namespace

LmCorpus::LmCorpus(const DataConfig& data, int64_t seq_length, int64_t vocab_size, int64_t tokenizer_vocab, int64_t seed)
    : seq_length_(seq_length), vocab_size_(vocab_size), seed_(seed), mock_(data.mock) {
  if (mock_) {
    description_ = fmt::format("synthetic tokens (vocab {})", vocab_size);
    return;
  }
  const std::array<double, 3> shares = parse_split(data.split).value();  // validated
  path_ = data.path.empty() ? kDefaultCorpus : data.path;
  const std::string& path = path_;
  const std::vector<std::pair<double, std::string>> blend = parse_blend(path);
  std::array<std::vector<GptDataset>, 3> parts;
  std::array<std::vector<double>, 3> weights;
  std::vector<std::string> described;
  for (size_t p = 0; p < blend.size(); ++p) {
    const auto& [weight, prefix] = blend[p];
    std::shared_ptr<const IndexedDataset> dataset;
    std::error_code error;
    if (fs::exists(prefix + ".idx", error)) {
      check_preprocessed_with(prefix, tokenizer_vocab, vocab_size);
      dataset = std::make_shared<IndexedDataset>(prefix);
    } else if (data.tokenizer == Tokenizer::kByte && blend.size() == 1) {
      dataset = read_byte_corpus(prefix);
    } else {
      throw DataError(fmt::format("'{}' is not a preprocessed dataset (there is no '{}.idx')", prefix, prefix),
                      blend.size() > 1 ? "a blend names prefixes written by foldtron preprocess"
                                       : "run foldtron preprocess --input FILE --tokenizer MODEL --output-prefix P and "
                                         "set data.path: P (text is read directly only with data.tokenizer: byte)");
    }
    const auto ranges = split_documents(dataset->num_documents(), shares);
    std::array<int64_t, 3> windows{};
    for (size_t s = 0; s < 3; ++s) {
      GptDataset part(dataset, ranges[s].first, ranges[s].second, seq_length,
                      static_cast<uint64_t>(seed) + 7919 * s + 104729 * p);
      windows[s] = part.num_windows();
      if (part.num_windows() > 0) {
        parts[s].push_back(std::move(part));
        weights[s].push_back(weight);
      } else if (blend.size() > 1 && shares[s] > 0) {
        // A blend must not quietly lose a dataset: refused for training, reported otherwise.
        if (s == 0) {
          throw DataError(fmt::format("'{}' of the blend has no training window of {} tokens", prefix, seq_length + 1),
                          "remove it from data.path, or give it more documents");
        }
        log::warning("data", "'{}' of the blend has no {} window; the {} split reads the other datasets",
                     prefix, split_name(static_cast<Split>(s)), split_name(static_cast<Split>(s)));
      }
    }
    described.push_back(fmt::format("{}{} ({} documents, {} tokens; train/valid/test windows {}/{}/{})",
                                    blend.size() > 1 ? fmt::format("{} x ", weight) : "", dataset->name(),
                                    dataset->num_documents(), dataset->num_tokens(), windows[0], windows[1], windows[2]));
  }
  if (parts[0].empty()) {
    throw DataError(fmt::format("the training split of '{}' has no window of {} tokens", path, seq_length + 1),
                    "use more data, a shorter train.seq_length, or a larger training share in data.split");
  }
  for (size_t s = 0; s < 3; ++s) {
    if (!parts[s].empty()) splits_[s] = std::make_unique<BlendedDataset>(std::move(parts[s]), std::move(weights[s]));
  }
  std::string joined;
  for (const std::string& d : described) joined += (joined.empty() ? "" : " + ") + d;
  description_ = fmt::format("{}; split {}, windows of {} tokens", joined, data.split, seq_length + 1);
}

int64_t LmCorpus::num_windows(Split split) const {
  if (mock_) return int64_t{1} << 40;  // synthetic: never repeats within a run
  const auto& dataset = splits_[static_cast<size_t>(split)];
  return dataset ? dataset->num_windows() : 0;
}

torch::Tensor LmCorpus::batch(Split split, int64_t first, int64_t count) const {
  const int64_t width = seq_length_ + 1;
  if (mock_) {
    std::vector<torch::Tensor> rows;
    for (int64_t i = 0; i < count; ++i) {
      at::Generator generator = at::detail::createCPUGenerator(
          static_cast<uint64_t>(seed_) * 7777 + static_cast<uint64_t>(first + i) + (static_cast<uint64_t>(split) << 48));
      rows.push_back(torch::randint(0, vocab_size_, {width}, generator, torch::kLong));
    }
    return torch::stack(rows);
  }
  const auto& dataset = splits_[static_cast<size_t>(split)];
  if (!dataset) {
    throw DataError(fmt::format("the {} split of the data is empty", split_name(split)),
                    "give it a share in data.split (e.g. 969,30,1) and enough documents");
  }
  torch::Tensor out = torch::empty({count, width}, torch::kLong);
  int64_t* rows = out.data_ptr<int64_t>();
  for (int64_t i = 0; i < count; ++i) dataset->window(first + i, rows + i * width);
  const int64_t high = count > 0 ? out.max().item<int64_t>() : 0, low = count > 0 ? out.min().item<int64_t>() : 0;
  if (high >= vocab_size_ || low < 0) {
    throw DataError(fmt::format("the data holds token id {}, outside model.vocab_size {} ({} samples from {} of '{}')",
                                high >= vocab_size_ ? high : low, vocab_size_, split_name(split), first, path_),
                    "preprocess the data with the model's tokenizer, or raise model.vocab_size");
  }
  return out;
}

}  // namespace foldtron
