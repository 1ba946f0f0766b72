// Text read as bytes: the trainer's default corpus (the English license texts every Debian-family
// system carries in /usr/share/common-licenses) and any text file or folder given as data.path
// with the byte tokenizer. Each file is one document of its bytes (ids 0..255), held in memory as
// an indexed dataset, so the byte corpus splits, windows and blends like preprocessed data.
#pragma once

#include <memory>
#include <string>

#include "data/indexed_dataset.h"

namespace foldtron {

constexpr const char* kDefaultCorpus = "/usr/share/common-licenses";

// Every regular file under `path` (a file or a folder, read recursively in name order), one
// document each. DataError naming the path when nothing can be read.
std::shared_ptr<const IndexedDataset> read_byte_corpus(const std::string& path);

}  // namespace foldtron
