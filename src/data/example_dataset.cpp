// Pair and labelled datasets (see example_dataset.h).
#include "data/example_dataset.h"

#include <fstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/errors.h"

namespace foldtron {

ExampleDataset::ExampleDataset(const std::string& prefix) {
  const std::string meta_path = prefix + ".json";
  std::ifstream in(meta_path);
  if (!in) {
    throw DataError(fmt::format("'{}' is missing: the dataset does not say what its fields are", meta_path),
                    "write pair and labelled datasets with foldtron preprocess --json-key A --json-key B "
                    "[--label-key L]");
  }
  const nlohmann::json meta = nlohmann::json::parse(in, nullptr, false);
  const auto bad = [&](const std::string& problem) {
    return DataError(fmt::format("'{}': {}", meta_path, problem), "write it again with foldtron preprocess");
  };
  if (meta.is_discarded() || !meta.is_object()) throw bad("not a JSON object");
  try {
    fields_ = meta.at("fields").get<std::vector<std::string>>();
    languages_ = meta.value("languages", std::vector<std::string>{});
    labels_ = meta.value("labels", std::vector<std::string>{});
    vocab_size_ = meta.value("vocab_size", int64_t{-1});
  } catch (const nlohmann::json::exception& error) {
    throw bad(fmt::format("malformed ({})", error.what()));
  }
  if (fields_.empty()) throw bad("no fields");
  if (!languages_.empty() && languages_.size() != fields_.size()) {
    throw bad(fmt::format("{} languages for {} fields", languages_.size(), fields_.size()));
  }
  data_ = std::make_shared<IndexedDataset>(prefix);
  const int64_t expected = static_cast<int64_t>(fields_.size()) + (labels_.empty() ? 0 : 1);
  for (int64_t d = 0; d < data_->num_documents(); ++d) {
    const int64_t have = data_->document_end_sequence(d) - data_->document_first_sequence(d);
    if (have != expected) {
      throw DataError(fmt::format("example {} of '{}' has {} sequences, but its fields need {}", d, prefix, have,
                                  expected),
                      "the .bin/.idx and the .json come from different runs: run foldtron preprocess again");
    }
    if (!labels_.empty()) {
      const std::vector<int64_t> ids = data_->sequence(data_->document_end_sequence(d) - 1);
      for (int64_t id : ids) {
        if (id < 0 || id >= static_cast<int64_t>(labels_.size())) {
          throw DataError(fmt::format("example {} of '{}' has label id {}, but there are {} labels", d, prefix, id,
                                      labels_.size()),
                          "run foldtron preprocess again");
        }
      }
      if (ids.empty()) throw DataError(fmt::format("example {} of '{}' has no label", d, prefix), "run foldtron preprocess again");
    }
  }
}

Example ExampleDataset::example(int64_t index) const {
  if (index < 0 || index >= size()) {
    throw DataError(fmt::format("example {} is outside '{}' ({} examples)", index, data_->name(), size()),
                    "ask for an index below the dataset's size");
  }
  Example example;
  const int64_t first = data_->document_first_sequence(index);
  for (size_t f = 0; f < fields_.size(); ++f) example.fields.push_back(data_->sequence(first + static_cast<int64_t>(f)));
  if (!labels_.empty()) example.labels = data_->sequence(first + static_cast<int64_t>(fields_.size()));
  return example;
}

}  // namespace foldtron
