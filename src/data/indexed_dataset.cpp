// Indexed datasets on disk (see indexed_dataset.h).
#include "data/indexed_dataset.h"

#include <cstring>
#include <limits>

#include <fmt/format.h>

#include "core/errors.h"
#include "core/files.h"

namespace foldtron {
namespace {

constexpr char kMagic[] = {'M', 'M', 'I', 'D', 'I', 'D', 'X', '\0', '\0'};
constexpr int64_t kVersion = 1;
constexpr int64_t kHeaderBytes = sizeof(kMagic) + 8 + 1 + 8 + 8;

template <typename T>
T load(const char* at) {
  T value;
  std::memcpy(&value, at, sizeof(T));
  return value;
}

template <typename T>
void append(std::vector<char>& out, T value) {
  const char* bytes = reinterpret_cast<const char*>(&value);
  out.insert(out.end(), bytes, bytes + sizeof(T));
}

bool known_dtype(uint8_t code) {
  switch (static_cast<TokenDType>(code)) {
    case TokenDType::kUInt8:
    case TokenDType::kInt16:
    case TokenDType::kInt32:
    case TokenDType::kInt64:
    case TokenDType::kUInt16:
      return true;
  }
  return false;
}

}  // namespace

int64_t token_bytes(TokenDType dtype) {
  switch (dtype) {
    case TokenDType::kUInt8:
      return 1;
    case TokenDType::kInt16:
    case TokenDType::kUInt16:
      return 2;
    case TokenDType::kInt32:
      return 4;
    case TokenDType::kInt64:
      return 8;
  }
  FT_CHECK(false, "unknown token dtype");
  return 0;
}

std::string token_dtype_name(TokenDType dtype) {
  switch (dtype) {
    case TokenDType::kUInt8:
      return "uint8";
    case TokenDType::kInt16:
      return "int16";
    case TokenDType::kUInt16:
      return "uint16";
    case TokenDType::kInt32:
      return "int32";
    case TokenDType::kInt64:
      return "int64";
  }
  return "unknown";
}

TokenDType token_dtype_for(int64_t vocab_size) {
  return vocab_size <= 65536 ? TokenDType::kUInt16 : TokenDType::kInt32;
}

IndexedDataset::IndexedDataset(const std::string& prefix)
    : name_(prefix), index_path_(prefix + ".idx"), tokens_path_(prefix + ".bin") {
  for (const std::string& path : {index_path_, tokens_path_}) {
    try {
      (path == index_path_ ? index_map_ : tokens_map_) = std::make_unique<MappedFile>(path);
    } catch (const IoError& error) {
      throw DataError(fmt::format("cannot read the indexed dataset '{}': {}", prefix, error.what()),
                      "give the prefix of files written by foldtron preprocess (P for P.bin and P.idx)");
    }
  }
  index_ = index_map_->data();
  index_size_ = index_map_->size();
  tokens_ = tokens_map_->data();
  tokens_size_ = tokens_map_->size();
  parse_index();
}

IndexedDataset::IndexedDataset(std::string name, std::vector<char> index, std::vector<char> tokens)
    : name_(std::move(name)), index_path_(name_ + " (index)"), tokens_path_(name_ + " (tokens)"),
      owned_index_(std::move(index)), owned_tokens_(std::move(tokens)) {
  index_ = owned_index_.data();
  index_size_ = static_cast<int64_t>(owned_index_.size());
  tokens_ = owned_tokens_.data();
  tokens_size_ = static_cast<int64_t>(owned_tokens_.size());
  parse_index();
}

IndexedDataset::~IndexedDataset() = default;

void IndexedDataset::parse_index() {
  const auto bad_index = [&](const std::string& problem) {
    return DataError(fmt::format("'{}' is not a valid dataset index: {}", index_path_, problem),
                     "write it again with foldtron preprocess (the .idx and .bin must come from the same run)");
  };
  if (index_size_ < kHeaderBytes) throw bad_index(fmt::format("{} bytes, shorter than the header", index_size_));
  if (std::memcmp(index_, kMagic, sizeof(kMagic)) != 0) throw bad_index("wrong magic (not an MMIDIDX index)");
  const char* at = index_ + sizeof(kMagic);
  const uint64_t version = load<uint64_t>(at);
  if (version != kVersion) throw bad_index(fmt::format("version {}, this foldtron reads version {}", version, kVersion));
  const uint8_t code = load<uint8_t>(at + 8);
  if (!known_dtype(code)) throw bad_index(fmt::format("unknown token dtype code {}", code));
  dtype_ = static_cast<TokenDType>(code);
  const uint64_t sequences = load<uint64_t>(at + 9), boundaries = load<uint64_t>(at + 17);
  const uint64_t limit = static_cast<uint64_t>(index_size_);
  if (sequences > limit / 12 || boundaries > limit / 8 || boundaries < 1 ||
      static_cast<int64_t>(kHeaderBytes + 12 * sequences + 8 * boundaries) != index_size_) {
    throw bad_index(fmt::format("{} bytes do not hold {} sequences and {} document boundaries", index_size_, sequences,
                                boundaries));
  }
  num_sequences_ = static_cast<int64_t>(sequences);
  num_documents_ = static_cast<int64_t>(boundaries) - 1;
  lengths_ = index_ + kHeaderBytes;
  offsets_ = lengths_ + 4 * num_sequences_;
  documents_ = offsets_ + 8 * num_sequences_;
  // Sequences lie back to back from the start of the .bin, which they fill exactly.
  const int64_t item = token_bytes(dtype_);
  int64_t expected = 0;
  for (int64_t i = 0; i < num_sequences_; ++i) {
    const int32_t length = load<int32_t>(lengths_ + 4 * i);
    const int64_t offset = load<int64_t>(offsets_ + 8 * i);
    if (length < 0) throw bad_index(fmt::format("sequence {} has length {}", i, length));
    if (offset != expected) {
      throw bad_index(fmt::format("sequence {} starts at byte {} of the .bin, expected {} (out of range or not "
                                  "contiguous)", i, offset, expected));
    }
    expected += static_cast<int64_t>(length) * item;
    if (expected > std::numeric_limits<int64_t>::max() / 2) throw bad_index("the sequence lengths overflow");
  }
  int64_t previous = 0;
  for (int64_t d = 0; d <= num_documents_; ++d) {
    const int64_t boundary = load<int64_t>(documents_ + 8 * d);
    if (boundary < previous || boundary > num_sequences_ || (d == 0 && boundary != 0)) {
      throw bad_index(fmt::format("document boundary {} is {} (boundaries must rise from 0 to {})", d, boundary,
                                  num_sequences_));
    }
    previous = boundary;
  }
  if (previous != num_sequences_) {
    throw bad_index(fmt::format("the documents end at sequence {}, but there are {}", previous, num_sequences_));
  }
  if (tokens_size_ != expected) {
    throw DataError(fmt::format("'{}' holds {} bytes, but '{}' describes {} ({} tokens of {})", tokens_path_,
                                tokens_size_, index_path_, expected, expected / item, token_dtype_name(dtype_)),
                    tokens_size_ < expected ? "the .bin is truncated: copy it again or run foldtron preprocess again"
                                            : "the .bin and .idx come from different runs: run foldtron preprocess "
                                              "again");
  }
  num_tokens_ = expected / item;
}

int64_t IndexedDataset::sequence_length(int64_t sequence) const {
  FT_CHECK(sequence >= 0 && sequence < num_sequences_, "sequence index out of range");
  return load<int32_t>(lengths_ + 4 * sequence);
}

int64_t IndexedDataset::sequence_start(int64_t sequence) const {
  FT_CHECK(sequence >= 0 && sequence <= num_sequences_, "sequence index out of range");
  if (sequence == num_sequences_) return num_tokens_;
  return load<int64_t>(offsets_ + 8 * sequence) / token_bytes(dtype_);
}

int64_t IndexedDataset::document_first_sequence(int64_t document) const {
  FT_CHECK(document >= 0 && document <= num_documents_, "document index out of range");
  return load<int64_t>(documents_ + 8 * document);
}

int64_t IndexedDataset::document_start(int64_t document) const {
  return sequence_start(document_first_sequence(document));
}

void IndexedDataset::read(int64_t start, int64_t count, int64_t* out) const {
  if (start < 0 || count < 0 || start + count > num_tokens_) {
    throw DataError(fmt::format("tokens [{}, {}) are outside '{}' ({} tokens)", start, start + count, name_, num_tokens_),
                    "this is a window past the end of the data: check data.path and the dataset's files");
  }
  const char* at = tokens_ + start * token_bytes(dtype_);
  const auto copy = [&](auto type_tag) {
    using T = decltype(type_tag);
    for (int64_t i = 0; i < count; ++i) out[i] = static_cast<int64_t>(load<T>(at + i * static_cast<int64_t>(sizeof(T))));
  };
  switch (dtype_) {
    case TokenDType::kUInt8:
      copy(uint8_t{});
      break;
    case TokenDType::kInt16:
      copy(int16_t{});
      break;
    case TokenDType::kUInt16:
      copy(uint16_t{});
      break;
    case TokenDType::kInt32:
      copy(int32_t{});
      break;
    case TokenDType::kInt64:
      copy(int64_t{});
      break;
  }
}

std::vector<int64_t> IndexedDataset::sequence(int64_t sequence) const {
  std::vector<int64_t> ids(static_cast<size_t>(sequence_length(sequence)));
  read(sequence_start(sequence), static_cast<int64_t>(ids.size()), ids.data());
  return ids;
}

std::vector<char> index_bytes(TokenDType dtype, const std::vector<int32_t>& lengths,
                              const std::vector<int64_t>& document_ends) {
  std::vector<char> out(kMagic, kMagic + sizeof(kMagic));
  out.reserve(kHeaderBytes + 12 * lengths.size() + 8 * (document_ends.size() + 1));
  append<uint64_t>(out, kVersion);
  append<uint8_t>(out, static_cast<uint8_t>(dtype));
  append<uint64_t>(out, lengths.size());
  append<uint64_t>(out, document_ends.size() + 1);
  for (int32_t length : lengths) append<int32_t>(out, length);
  int64_t offset = 0;
  for (int32_t length : lengths) {
    append<int64_t>(out, offset);
    offset += static_cast<int64_t>(length) * token_bytes(dtype);
  }
  append<int64_t>(out, 0);
  for (int64_t end : document_ends) append<int64_t>(out, end);
  return out;
}

IndexedDatasetWriter::IndexedDatasetWriter(std::string prefix, TokenDType dtype)
    : prefix_(std::move(prefix)), dtype_(dtype), tokens_(std::make_unique<AtomicFile>(prefix_ + ".bin")) {}

IndexedDatasetWriter::~IndexedDatasetWriter() = default;  // unfinished: the temporaries are removed

void IndexedDatasetWriter::add_sequence(const std::vector<int64_t>& ids) {
  FT_CHECK(!finished_, "IndexedDatasetWriter::add_sequence after finish");
  if (ids.size() > static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
    throw DataError(fmt::format("a sequence of {} tokens is longer than an index can describe", ids.size()),
                    "split the document into shorter ones");
  }
  int64_t high = 0;
  switch (dtype_) {
    case TokenDType::kUInt8:
      high = 0xff;
      break;
    case TokenDType::kInt16:
      high = 0x7fff;
      break;
    case TokenDType::kUInt16:
      high = 0xffff;
      break;
    case TokenDType::kInt32:
      high = std::numeric_limits<int32_t>::max();
      break;
    case TokenDType::kInt64:
      high = std::numeric_limits<int64_t>::max();
      break;
  }
  for (int64_t id : ids) {  // all checked before any is written
    if (id < 0 || id > high) {
      throw DataError(fmt::format("token id {} does not fit the dataset's {} tokens", id, token_dtype_name(dtype_)),
                      "the tokenizer's vocabulary is larger than the dataset dtype allows");
    }
  }
  const size_t item = static_cast<size_t>(token_bytes(dtype_));
  for (int64_t id : ids) {
    const size_t at = buffer_.size();
    buffer_.resize(at + item);
    std::memcpy(buffer_.data() + at, &id, item);  // little-endian: the low bytes
  }
  if (buffer_.size() >= (1u << 22)) flush();
  lengths_.push_back(static_cast<int32_t>(ids.size()));
  num_tokens_ += static_cast<int64_t>(ids.size());
}

void IndexedDatasetWriter::end_document() {
  const int64_t sequences = static_cast<int64_t>(lengths_.size());
  if (document_ends_.empty() ? sequences > 0 : sequences > document_ends_.back()) document_ends_.push_back(sequences);
}

void IndexedDatasetWriter::flush() {
  tokens_->write(buffer_.data(), buffer_.size());
  bytes_ += static_cast<int64_t>(buffer_.size());
  buffer_.clear();
}

void IndexedDatasetWriter::finish() {
  FT_CHECK(!finished_, "IndexedDatasetWriter::finish twice");
  end_document();
  flush();
  const std::vector<char> index = index_bytes(dtype_, lengths_, document_ends_);
  AtomicFile index_file(prefix_ + ".idx");
  index_file.write(index.data(), index.size());
  // The .bin first: an .idx under its final name always describes a complete .bin.
  tokens_->commit();
  index_file.commit();
  bytes_ += static_cast<int64_t>(index.size());
  finished_ = true;
}

}  // namespace foldtron
