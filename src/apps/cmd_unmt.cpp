// `foldtron unmt`: the translation recipe's data tools.
//   foldtron unmt corpus --catalogs DIR [--catalogs DIR] --descriptions DIR --heldout FILE --output DIR
//                        [--dev-pairs N] [--test-pairs N] [--max-words N] [--seed S]
// builds the En/De/Fr corpus and its splits (tasks/unmt/corpus.h) and prints the line counts.
//   foldtron unmt init-decoder --load MLM_CKPT --output DIR
// starts a translation model from its masked language modelling pretraining (tasks/unmt/init_decoder.h).
#include <iostream>
#include <memory>

#include <fmt/format.h>

#include "apps/commands.h"
#include "config/config.h"
#include "config/layout.h"
#include "parallel/mpi_runtime.h"
#include "parallel/process_groups.h"
#include "tasks/unmt/corpus.h"
#include "tasks/unmt/init_decoder.h"

namespace foldtron::cli {

Runner register_unmt(CLI::App& root) {
  auto options = std::make_shared<CorpusOptions>();
  struct InitDecoderFlags {
    std::string load, output;
  };
  auto init = std::make_shared<InitDecoderFlags>();
  CLI::App* app = root.add_subcommand("unmt", "data tools of the unsupervised translation recipe");
  app->require_subcommand(1);
  CLI::App* corpus = app->add_subcommand(
      "corpus", "build the English/German/French corpus from message catalogs and package descriptions");
  corpus->add_option("--catalogs", options->catalog_roots, "folder searched for de|fr/LC_MESSAGES/*.mo (repeatable)")
      ->required();
  corpus->add_option("--descriptions", options->descriptions, "folder with Translation-en, -de and -fr")->required();
  corpus->add_option("--heldout", options->heldout_packages, "packages whose descriptions are never used")
      ->required();
  corpus->add_option("--output", options->output, "folder for the split files and corpus.json")->required();
  corpus->add_option("--dev-pairs", options->dev_pairs, "En-De dev pairs per source")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  corpus->add_option("--test-pairs", options->test_pairs, "En-De test pairs per source")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  corpus->add_option("--max-words", options->max_words, "longest segment kept, in words")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  corpus->add_option("--seed", options->seed, "seed of the split assignment")->capture_default_str();
  CLI::App* init_decoder = app->add_subcommand(
      "init-decoder", "start a translation model from masked language modelling: the decoder copies the encoder");
  init_decoder->add_option("--load", init->load, "checkpoint of the pretraining run (translation.mlm)")->required();
  init_decoder->add_option("--output", init->output, "save folder for the initialized model")->required();
  return [options, init, init_decoder]() {
    if (init_decoder->parsed()) {
      MpiRuntime mpi(nullptr, nullptr);
      return run_guarded([&]() -> int {
        ProcessGroups groups(Topology(layout_of(ParallelConfig{}, mpi.size())),
                             make_comm_options(ParallelConfig{}, false));
        init_decoder_checkpoint(init->load, init->output, groups);
        return 0;
      });
    }
    const CorpusReport report = build_corpus(*options);
    for (const auto& [name, lines] : report.lines) std::cout << fmt::format("{:<24} {:>8}\n", name, lines);
    std::string dropped;
    for (const auto& [reason, count] : report.dropped) dropped += fmt::format(" {} {}", reason, count);
    std::cout << fmt::format("dropped by cleaning:{}; held-out segments: {}; removed as leaks: {}\n", dropped,
                             report.heldout_segments, report.leak_removed);
    return 0;
  };
}

}  // namespace foldtron::cli
