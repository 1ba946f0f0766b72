// Tokenizers: text <-> token ids. Two kinds behind one interface:
//   byte           every UTF-8 byte is its own id (0..255); no special tokens (the tests' corpus)
//   sentencepiece  a sentencepiece model file (BPE or unigram), ours or a Hugging Face model's
//                  tokenizer.model, with its special pieces (unk, bos, eos, pad, user-defined
//                  symbols such as language tags <2de> or <mask>)
// and the sentencepiece trainer that writes such a model (`foldtron tokenizer train`).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace foldtron {

class TextTokenizer {
 public:
  virtual ~TextTokenizer() = default;
  virtual std::vector<int64_t> encode(const std::string& text) const = 0;
  // DataError naming the id when one is outside the vocabulary.
  virtual std::string decode(const std::vector<int64_t>& ids) const = 0;
  virtual int64_t vocab_size() const = 0;
  // The id of a whole piece ("<2de>", "</s>"), or -1 when the vocabulary has no such piece.
  virtual int64_t piece_id(const std::string& piece) const = 0;
  virtual std::string piece(int64_t id) const = 0;
  // The special ids, -1 where the tokenizer has none.
  virtual int64_t unk_id() const { return -1; }
  virtual int64_t bos_id() const { return -1; }
  virtual int64_t eos_id() const { return -1; }
  virtual int64_t pad_id() const { return -1; }
  virtual std::string describe() const = 0;
};

class ByteTokenizer : public TextTokenizer {
 public:
  std::vector<int64_t> encode(const std::string& text) const override;
  std::string decode(const std::vector<int64_t>& ids) const override;
  int64_t vocab_size() const override { return 256; }
  int64_t piece_id(const std::string& piece) const override;
  std::string piece(int64_t id) const override;
  std::string describe() const override { return "byte (256 ids)"; }
};

class SentencePieceTokenizer : public TextTokenizer {
 public:
  // `path`: a .model file, or a directory holding tokenizer.model (a Hugging Face model's).
  // DataError naming the file when it is missing or not a sentencepiece model.
  explicit SentencePieceTokenizer(const std::string& path);
  ~SentencePieceTokenizer() override;

  std::vector<int64_t> encode(const std::string& text) const override;
  std::string decode(const std::vector<int64_t>& ids) const override;
  int64_t vocab_size() const override;
  int64_t piece_id(const std::string& piece) const override;
  std::string piece(int64_t id) const override;
  int64_t unk_id() const override;
  int64_t bos_id() const override;
  int64_t eos_id() const override;
  int64_t pad_id() const override;
  std::string describe() const override;
  // The pieces of `text` as sentencepiece writes them ("▁Hello", ...).
  std::vector<std::string> encode_pieces(const std::string& text) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::string path_;
};

struct SentencePieceTrainOptions {
  std::vector<std::string> inputs;  // text files, one sentence (or document) per line
  std::string model_prefix;         // writes PREFIX.model and PREFIX.vocab
  int64_t vocab_size = 8000;
  std::string model_type = "bpe";  // bpe or unigram
  double character_coverage = 0.9995;
  std::vector<std::string> user_defined_symbols;  // pieces kept whole, ids after pad (language tags)
  int64_t threads = 0;                             // 0: every core
  int64_t input_sentence_size = 0;                 // lines sampled for training; 0: all
  bool byte_fallback = true;  // unknown characters become byte pieces (exact round trips)
  std::string normalization = "nmt_nfkc";  // sentencepiece's normalization rule (identity: none)
  int64_t seed = 1;
};

struct DataConfig;

// The tokenizer data.tokenizer and data.tokenizer_model name.
std::unique_ptr<TextTokenizer> make_tokenizer(const DataConfig& data);

// Checks the special tokens a run relies on against the model's vocabulary: the tokenizer's own
// (unk, bos, eos, pad: ids below `vocab_size`) and data.required_tokens (each one piece of the
// tokenizer, with an id below `vocab_size`). Returns the required tokens' ids in order; a
// ConfigError naming the key and the token otherwise.
std::vector<int64_t> check_special_tokens(const DataConfig& data, const TextTokenizer& tokenizer, int64_t vocab_size);

// Trains a sentencepiece model (unk 0, bos 1, eos 2, pad 3, then the user-defined symbols);
// sentencepiece logs its progress to stderr. DataError naming the problem (an unreadable input, a
// vocabulary too small or too large for the text) with a hint.
void train_sentencepiece(const SentencePieceTrainOptions& options);

}  // namespace foldtron
