// `foldtron preprocess`: text or JSONL in, an indexed dataset (indexed_dataset.h) out.
//   text   one document per line, or (paragraphs) blank-line separated documents
//   JSONL  one object per line; each --json-key names a field (one key: a language-model
//          document; several: a pair or multi-field example; --label-key adds labels)
// Documents are tokenized on every core in chunks and written in input order (the output is the
// same for any number of workers), each text sequence followed by the EOS. Tokens are
// uint16 when the vocabulary fits, else int32. Beside P.bin/P.idx, P.json records the tokenizer,
// the fields and the counts.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "data/indexed_dataset.h"
#include "data/tokenizer.h"

namespace foldtron {

struct PreprocessOptions {
  std::vector<std::string> inputs;
  std::vector<std::string> json_keys;  // empty: plain text
  std::string label_key;               // JSONL: a string or a list of strings per line
  std::vector<std::string> labels;     // the label set in id order; empty: in order of appearance
  std::vector<std::string> languages;  // one per field (pairs), recorded in P.json
  bool paragraphs = false;             // text: blank-line separated documents instead of lines
  bool append_eos = true;
  int64_t workers = 0;                 // 0: every core
  std::string output_prefix;
  std::string tokenizer_name;          // recorded in P.json (the model file, or "byte")
  bool progress = true;                // progress lines on stderr
};

struct PreprocessSummary {
  int64_t documents = 0, skipped = 0, sequences = 0, tokens = 0;
  int64_t input_bytes = 0, output_bytes = 0;
  double seconds = 0;
  TokenDType dtype = TokenDType::kUInt16;
  std::vector<std::string> labels;
};

// DataError naming the file and line of malformed input (a line that is not JSON, a missing key,
// a label outside --labels), and for an input the output would overwrite; IoError when the
// output cannot be written.
PreprocessSummary preprocess(const PreprocessOptions& options, const TextTokenizer& tokenizer);

}  // namespace foldtron
