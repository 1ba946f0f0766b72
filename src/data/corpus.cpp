// Text read as bytes (see corpus.h).
#include "data/corpus.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <vector>

#include <fmt/format.h>

#include "core/errors.h"

namespace foldtron {
namespace fs = std::filesystem;

std::shared_ptr<const IndexedDataset> read_byte_corpus(const std::string& path) {
  std::error_code error;
  if (!fs::exists(path, error)) {
    throw DataError(fmt::format("the corpus '{}' does not exist", path),
                    path == kDefaultCorpus ? "install the base-files package (it ships the license texts) or set "
                                             "data.path to a text file or folder, or use data.mock: true"
                                           : "set data.path to a text file or a folder of text files, or to the "
                                             "prefix of a dataset written by foldtron preprocess");
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
  std::vector<char> tokens;
  std::vector<int32_t> lengths;
  std::vector<int64_t> document_ends;
  for (const fs::path& file : files) {
    std::ifstream in(file, std::ios::binary);
    if (!in) throw DataError(fmt::format("cannot read '{}'", file.string()), "check its permissions");
    const std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (bytes.empty()) continue;
    if (bytes.size() > static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
      throw DataError(fmt::format("'{}' holds {} bytes, more than one document read as bytes may", file.string(),
                                  bytes.size()),
                      "preprocess it (foldtron preprocess --tokenizer byte) and set data.path to the prefix");
    }
    tokens.insert(tokens.end(), bytes.begin(), bytes.end());
    lengths.push_back(static_cast<int32_t>(bytes.size()));
    document_ends.push_back(static_cast<int64_t>(lengths.size()));
  }
  if (tokens.empty()) {
    throw DataError(fmt::format("the corpus '{}' holds no text", path), "point data.path at non-empty text files");
  }
  return std::make_shared<IndexedDataset>(path, index_bytes(TokenDType::kUInt8, lengths, document_ends),
                                          std::move(tokens));
}

}  // namespace foldtron
