// `foldtron tokenizer`: train a sentencepiece model, and encode or decode lines with one.
//   foldtron tokenizer train --input FILE... --model-prefix P --vocab-size N [--model-type bpe|unigram]
//            [--character-coverage 0.9995] [--user-defined-symbols '<2en>' '<2de>'] [--threads N]
//   foldtron tokenizer encode --model P.model [--pieces] < text > ids     (one line in, one out)
//   foldtron tokenizer decode --model P.model < ids > text
#include <chrono>
#include <iostream>
#include <memory>
#include <sstream>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "apps/cli_options.h"
#include "apps/commands.h"
#include "core/errors.h"
#include "core/log.h"
#include "data/tokenizer.h"

namespace foldtron::cli {
namespace {

struct TokenizerFlags {
  SentencePieceTrainOptions train;
  std::string model;
  bool pieces = false;
};

int run_train(const SentencePieceTrainOptions& options) {
  const auto started = std::chrono::steady_clock::now();
  log::info("tokenizer", "training a {} sentencepiece model of {} pieces on {} (sentencepiece's progress follows)",
            options.model_type, options.vocab_size, fmt::join(options.inputs, ", "));
  train_sentencepiece(options);
  const SentencePieceTokenizer trained(options.model_prefix + ".model");
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  log::info("tokenizer", "wrote {0}.model and {0}.vocab in {1:.2f} s: {2}", options.model_prefix, seconds,
            trained.describe());
  return 0;
}

int run_encode(const TokenizerFlags& flags) {
  const SentencePieceTokenizer tokenizer(flags.model);
  for (std::string line; std::getline(std::cin, line);) {
    if (flags.pieces) {
      std::cout << fmt::format("{}\n", fmt::join(tokenizer.encode_pieces(line), " "));
    } else {
      std::cout << fmt::format("{}\n", fmt::join(tokenizer.encode(line), " "));
    }
  }
  return 0;
}

int run_decode(const TokenizerFlags& flags) {
  const SentencePieceTokenizer tokenizer(flags.model);
  int64_t number = 0;
  for (std::string line; std::getline(std::cin, line);) {
    ++number;
    std::istringstream in(line);
    std::vector<int64_t> ids;
    std::string word;
    while (in >> word) {
      try {
        size_t used = 0;
        ids.push_back(std::stoll(word, &used));
        if (used != word.size()) throw std::invalid_argument(word);
      } catch (const std::logic_error&) {
        throw DataError(fmt::format("line {} of the input: '{}' is not a token id", number, word),
                        "decode reads lines of space-separated ids, as encode writes them");
      }
    }
    std::cout << tokenizer.decode(ids) << "\n";
  }
  return 0;
}

}  // namespace

Runner register_tokenizer(CLI::App& root) {
  auto flags = std::make_shared<TokenizerFlags>();
  CLI::App* app = root.add_subcommand("tokenizer", "train a sentencepiece tokenizer; encode or decode with one");
  app->require_subcommand(1);
  CLI::App* train = app->add_subcommand("train", "train a sentencepiece model (PREFIX.model, PREFIX.vocab)");
  SentencePieceTrainOptions& o = flags->train;
  train->add_option("--input", o.inputs, "text files, one sentence or document per line")->required();
  train->add_option("--model-prefix", o.model_prefix, "writes PREFIX.model and PREFIX.vocab")->required();
  train->add_option("--vocab-size", o.vocab_size, "pieces in the vocabulary")->required()->check(CLI::Range(8, 1 << 24));
  train->add_option("--model-type", o.model_type, "bpe or unigram")
      ->capture_default_str()
      ->check(CLI::IsMember({"bpe", "unigram"}));
  train->add_option("--character-coverage", o.character_coverage, "share of characters the pieces cover")
      ->capture_default_str()
      ->check(CLI::Range(0.5, 1.0));
  train->add_option("--user-defined-symbols", o.user_defined_symbols,
                    "pieces kept whole, ids after <pad> (language tags such as <2de>, <mask>)");
  train->add_option("--threads", o.threads, "training threads (0: every core)")->capture_default_str();
  train->add_option("--input-sentence-size", o.input_sentence_size, "lines sampled for training (0: all)")
      ->capture_default_str();
  train->add_option("--normalization", o.normalization, "sentencepiece's normalization rule (nmt_nfkc, identity, ...)")
      ->capture_default_str();
  train->add_flag("!--no-byte-fallback", o.byte_fallback, "unknown characters become <unk> instead of byte pieces");
  train->add_option("--seed", o.seed, "seed of sentencepiece's sampling")->capture_default_str();
  CLI::App* encode = app->add_subcommand("encode", "encode standard input, one line of ids per line");
  encode->add_option("--model", flags->model, "sentencepiece .model, or a Hugging Face directory with one")->required();
  encode->add_flag("--pieces", flags->pieces, "write the pieces instead of their ids");
  CLI::App* decode = app->add_subcommand("decode", "decode lines of space-separated ids from standard input");
  decode->add_option("--model", flags->model, "sentencepiece .model, or a Hugging Face directory with one")->required();
  app->footer(environment_help());
  return [flags, train, encode]() {
    if (train->parsed()) return run_train(flags->train);
    if (encode->parsed()) return run_encode(*flags);
    return run_decode(*flags);
  };
}

}  // namespace foldtron::cli
