// Examples of several fields in the indexed format (indexed_dataset.h): each document is one
// example whose sequences are its fields in a fixed order, for the tasks that are not plain
// language modelling:
//   pairs     source and target sentences (translation), with their languages;
//   labelled  one or more text fields and a last sequence of label ids (discourse relations:
//             Arg1, Arg2 and the senses, the first of which is the main one).
// What the fields are is recorded beside the data in P.json (written by foldtron preprocess with
// several --json-key and optionally --label-key):
//   {"fields": ["source", "target"], "languages": ["en", "de"], "labels": [], "vocab_size": ..., ...}
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/indexed_dataset.h"

namespace foldtron {

struct Example {
  std::vector<std::vector<int64_t>> fields;  // token ids of each field, in the order of fields()
  std::vector<int64_t> labels;               // label ids (labelled datasets), the main one first
};

class ExampleDataset {
 public:
  // Opens PREFIX.bin/.idx and PREFIX.json and checks that every document has one sequence per
  // field (+ one of labels) and that label ids name labels. DataError naming the problem.
  explicit ExampleDataset(const std::string& prefix);

  int64_t size() const { return data_->num_documents(); }
  Example example(int64_t index) const;
  const std::vector<std::string>& fields() const { return fields_; }
  const std::vector<std::string>& languages() const { return languages_; }  // one per field, or empty
  const std::vector<std::string>& labels() const { return labels_; }        // empty: not labelled
  int64_t vocab_size() const { return vocab_size_; }
  const IndexedDataset& data() const { return *data_; }

 private:
  std::shared_ptr<const IndexedDataset> data_;
  std::vector<std::string> fields_, languages_, labels_;
  int64_t vocab_size_ = -1;
};

}  // namespace foldtron
