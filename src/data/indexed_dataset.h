// Indexed datasets: token sequences on disk as P.bin (the tokens, back to back) and P.idx (where
// each sequence starts and how long it is, and which sequences make a document), in the format
// Megatron-LM's preprocessing writes, so either tool reads the other's files:
//
//   P.idx  "MMIDIDX\0\0"  magic (9 bytes)
//          uint64         version (1)
//          uint8          dtype code of P.bin (1 uint8, 3 int16, 4 int32, 5 int64, 8 uint16)
//          uint64         S, the number of sequences
//          uint64         D + 1, the number of document boundaries
//          int32[S]       sequence lengths (tokens)
//          int64[S]       sequence offsets into P.bin (bytes)
//          int64[D + 1]   document boundaries: document d holds sequences [b[d], b[d + 1])
//   P.bin  the tokens, little-endian
//
// Both files are memory-mapped: nothing is copied into RAM, and ranks on one node share the page
// cache. Opening validates the header, the sizes and every offset (DataError naming the file and
// the problem), so a window may be read from the concatenated tokens of consecutive sequences.
// A language-model document is one sequence; a pair (translation) or labelled (discourse) example
// is one document of several sequences (example_dataset.h).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace foldtron {

class AtomicFile;
class MappedFile;

enum class TokenDType : uint8_t { kUInt8 = 1, kInt16 = 3, kInt32 = 4, kInt64 = 5, kUInt16 = 8 };

// Bytes of one token; the code's name ("uint16").
int64_t token_bytes(TokenDType dtype);
std::string token_dtype_name(TokenDType dtype);
// The smallest dtype preprocessing uses for ids below `vocab_size`: uint16, else int32.
TokenDType token_dtype_for(int64_t vocab_size);

class IndexedDataset {
 public:
  // Maps PREFIX.idx and PREFIX.bin and validates them.
  explicit IndexedDataset(const std::string& prefix);
  // A dataset held in memory (the byte corpus): `index` in the .idx layout, `tokens` the .bin.
  IndexedDataset(std::string name, std::vector<char> index, std::vector<char> tokens);
  ~IndexedDataset();
  IndexedDataset(const IndexedDataset&) = delete;
  IndexedDataset& operator=(const IndexedDataset&) = delete;

  const std::string& name() const { return name_; }
  TokenDType dtype() const { return dtype_; }
  int64_t num_sequences() const { return num_sequences_; }
  int64_t num_documents() const { return num_documents_; }
  int64_t num_tokens() const { return num_tokens_; }
  int64_t sequence_length(int64_t sequence) const;
  // Token offset of a sequence in the concatenated stream.
  int64_t sequence_start(int64_t sequence) const;
  // Sequences [first, end) of a document.
  int64_t document_first_sequence(int64_t document) const;
  int64_t document_end_sequence(int64_t document) const { return document_first_sequence(document + 1); }
  // Token offset where a document starts; document_start(num_documents()) is num_tokens().
  int64_t document_start(int64_t document) const;
  // Tokens [start, start + count) of the concatenated stream as int64 into `out` (bounds-checked).
  void read(int64_t start, int64_t count, int64_t* out) const;
  std::vector<int64_t> sequence(int64_t sequence) const;

 private:
  void parse_index();

  std::string name_, index_path_, tokens_path_;
  std::unique_ptr<MappedFile> index_map_, tokens_map_;
  std::vector<char> owned_index_, owned_tokens_;
  const char* index_ = nullptr;
  const char* tokens_ = nullptr;
  int64_t index_size_ = 0, tokens_size_ = 0;
  TokenDType dtype_ = TokenDType::kUInt16;
  int64_t num_sequences_ = 0, num_documents_ = 0, num_tokens_ = 0;
  const char* lengths_ = nullptr;    // int32[S]
  const char* offsets_ = nullptr;    // int64[S]
  const char* documents_ = nullptr;  // int64[D + 1]
};

// The .idx bytes for sequences of `lengths` tokens in `dtype`, documents ending after the given
// sequence counts (`document_ends`, increasing, the last one lengths.size()).
std::vector<char> index_bytes(TokenDType dtype, const std::vector<int32_t>& lengths,
                              const std::vector<int64_t>& document_ends);

// Writes PREFIX.bin and PREFIX.idx: sequences are appended, end_document() closes a document.
// Both files are written under temporary names, synced and renamed by finish(), so a crash leaves
// no half-written dataset under the final names.
class IndexedDatasetWriter {
 public:
  IndexedDatasetWriter(std::string prefix, TokenDType dtype);
  ~IndexedDatasetWriter();
  // DataError when an id does not fit the dtype.
  void add_sequence(const std::vector<int64_t>& ids);
  void end_document();
  // Closes the last document (documents without sequences are not recorded), writes the index,
  // renames both files.
  void finish();
  int64_t num_tokens() const { return num_tokens_; }
  int64_t num_documents() const { return static_cast<int64_t>(document_ends_.size()); }
  // Bytes of both files so far.
  int64_t bytes_written() const { return bytes_ + static_cast<int64_t>(buffer_.size()); }

 private:
  void flush();

  std::string prefix_;
  TokenDType dtype_;
  std::unique_ptr<AtomicFile> tokens_;
  int64_t bytes_ = 0;
  std::vector<char> buffer_;
  std::vector<int32_t> lengths_;
  std::vector<int64_t> document_ends_;
  int64_t num_tokens_ = 0;
  bool finished_ = false;
};

}  // namespace foldtron
