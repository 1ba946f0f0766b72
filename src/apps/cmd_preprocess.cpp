// `foldtron preprocess`: tokenize text or JSONL into an indexed dataset for training.
//   foldtron preprocess --input FILE... [--json-key K]... [--label-key L] --tokenizer P.model|byte
//                       --output-prefix O [--workers N] [--paragraphs] [--no-eos]
// writes O.bin, O.idx (data/indexed_dataset.h) and O.json; training reads them with data.path: O.
#include <algorithm>
#include <memory>

#include <fmt/format.h>

#include "apps/cli_options.h"
#include "apps/commands.h"
#include "core/errors.h"
#include "core/log.h"
#include "data/preprocess.h"
#include "data/tokenizer.h"

namespace foldtron::cli {

Runner register_preprocess(CLI::App& root) {
  auto options = std::make_shared<PreprocessOptions>();
  auto tokenizer_path = std::make_shared<std::string>();
  auto quiet = std::make_shared<bool>(false);
  CLI::App* app = root.add_subcommand("preprocess", "tokenize text or JSONL into an indexed dataset (O.bin, O.idx)");
  app->add_option("--input", options->inputs, "text files (a document per line) or JSONL files")->required();
  app->add_option("--json-key", options->json_keys,
                  "read JSONL, taking this key's text; several keys make pair or multi-field examples");
  app->add_option("--label-key", options->label_key, "JSONL key of each example's label or list of labels");
  app->add_option("--labels", options->labels, "the labels in id order (default: in order of appearance)")
      ->delimiter(',');
  app->add_option("--languages", options->languages, "the language of each --json-key field (recorded in O.json)")
      ->delimiter(',');
  app->add_option("--tokenizer", *tokenizer_path,
                  "sentencepiece .model (or a Hugging Face directory with one), or 'byte'")
      ->required();
  app->add_option("--output-prefix", options->output_prefix, "writes PREFIX.bin, PREFIX.idx and PREFIX.json")
      ->required();
  app->add_option("--workers", options->workers, "tokenizing threads (0: every core)")->capture_default_str();
  app->add_flag("--paragraphs", options->paragraphs, "text: documents are separated by blank lines, not one per line");
  app->add_flag("!--no-eos", options->append_eos, "do not end each sequence with the tokenizer's EOS");
  app->add_flag("--quiet", *quiet, "no progress lines");
  app->footer(environment_help());
  return [options, tokenizer_path, quiet]() {
    std::unique_ptr<TextTokenizer> tokenizer;
    if (*tokenizer_path == "byte") {
      tokenizer = std::make_unique<ByteTokenizer>();
    } else {
      tokenizer = std::make_unique<SentencePieceTokenizer>(*tokenizer_path);
    }
    if (!options->label_key.empty() && options->json_keys.empty()) {
      throw UsageError("--label-key needs JSONL input", "name the text fields with --json-key");
    }
    options->tokenizer_name = *tokenizer_path;
    options->progress = !*quiet;
    log::info("preprocess", "{} input file(s) with {}; {} threads", options->inputs.size(), tokenizer->describe(),
              options->workers > 0 ? std::to_string(options->workers) : std::string("all"));
    const PreprocessSummary s = preprocess(*options, *tokenizer);
    log::info("preprocess",
              "wrote {0}.bin, {0}.idx and {0}.json: {1} documents ({2} empty ones skipped), {3} sequences, {4} tokens "
              "({5}), {6} bytes in, {7} bytes out, {8:.2f} s, {9:.0f} tokens/s{10}",
              options->output_prefix, s.documents, s.skipped, s.sequences, s.tokens, token_dtype_name(s.dtype),
              s.input_bytes, s.output_bytes, s.seconds, static_cast<double>(s.tokens) / std::max(s.seconds, 1e-9),
              s.labels.empty() ? "" : fmt::format("; {} labels", s.labels.size()));
    if (s.documents == 0) {
      log::warning("preprocess", "the inputs held no non-empty document: '{}' is an empty dataset",
                   options->output_prefix);
    }
    return 0;
  };
}

}  // namespace foldtron::cli
