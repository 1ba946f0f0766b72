// `foldtron unmt`: the translation recipe's data tools.
//   foldtron unmt corpus --catalogs DIR [--catalogs DIR] --descriptions DIR --heldout FILE --output DIR
//                        [--dev-pairs N] [--test-pairs N] [--max-words N] [--seed S]
// builds the En/De/Fr corpus and its splits (tasks/unmt/corpus.h) and prints the line counts.
#include <iostream>
#include <memory>

#include <fmt/format.h>

#include "apps/commands.h"
#include "tasks/unmt/corpus.h"

namespace foldtron::cli {

Runner register_unmt(CLI::App& root) {
  auto options = std::make_shared<CorpusOptions>();
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
  return [options]() {
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
