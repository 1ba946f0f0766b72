// `foldtron discourse`: the implicit discourse relation recipe's tools.
//   foldtron discourse score --gold RELATIONS.json --pred PRED.jsonl --level 4way|11way [--json]
// scores predictions against CoNLL-2016 relations (tasks/discourse/metrics.h): with --json one
// object {"accuracy", "macro_f1", "per_class": {sense: {"precision", "recall", "f1"}}} (DESIGN.md's
// contract); else a report with the per-class counts, the one-vs-rest F1 of each top-level class
// and the confusion matrix.
//   foldtron discourse split (--pdtb2 FILE | --pdtb3 DIR | --conll FILE) --output DIR
//                            [--preset ji|lin] [--types Implicit,...] [--level 4way|11way]
// reads a corpus (tasks/discourse/pdtb.h), keeps the relations of --types, and writes
// DIR/{train,dev,test}.json in the CoNLL-2016 form by the preset's WSJ sections; prints the
// instances per class and split at the level (second senses counted as in evaluation).
//   foldtron discourse corpus --docs DIR [--docs DIR] --output DIR [--seed S] [--dev-share X] [--test-share X]
// mines the silver corpus of explicit relations from HTML manuals (tasks/discourse/silver.h;
// scripts/discourse_corpus.sh fetches the pinned packages) and prints its counts.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "apps/commands.h"
#include "core/errors.h"
#include "core/text.h"
#include "tasks/discourse/metrics.h"
#include "tasks/discourse/pdtb.h"
#include "tasks/discourse/relations.h"
#include "tasks/discourse/silver.h"

namespace foldtron::cli {
namespace {

struct SplitFlags {
  std::string pdtb2, pdtb3, conll, output, preset = "ji", types = "Implicit", level = "4way";
};

int write_splits(const SplitFlags& flags) {
  const int sources = !flags.pdtb2.empty() + !flags.pdtb3.empty() + !flags.conll.empty();
  if (sources != 1) {
    throw UsageError("discourse split reads one corpus", "pass exactly one of --pdtb2, --pdtb3 and --conll");
  }
  const SplitPreset preset = parse_split_preset(flags.preset, "--preset");
  const SenseLevel level = parse_sense_level(flags.level, "--level");
  const std::vector<DiscourseRelation> relations = !flags.pdtb2.empty()   ? read_pdtb2_csv(flags.pdtb2)
                                                   : !flags.pdtb3.empty() ? read_pdtb3(flags.pdtb3)
                                                                          : read_conll_relations(flags.conll);
  std::vector<std::string> types;
  for (const std::string& t : split(flags.types, ',')) {
    if (!t.empty()) types.push_back(t);
  }
  std::map<std::string, std::vector<DiscourseRelation>> by_split;
  int64_t unplaced = 0;
  for (const DiscourseRelation& r : relations) {
    if (std::find(types.begin(), types.end(), r.type) == types.end()) continue;
    const int64_t section = wsj_section(r.doc_id);
    if (section < 0) {
      throw DataError(fmt::format("relation {} has document id '{}', not wsj_SSNN: the preset cannot place it", r.id,
                                  r.doc_id),
                      "split by WSJ sections only corpora of the Penn Treebank's documents");
    }
    const std::string name = split_of(section, preset);
    if (name.empty()) {
      ++unplaced;
    } else {
      by_split[name].push_back(r);
    }
  }
  make_folder(flags.output);
  for (const std::string name : {"train", "dev", "test"}) {
    write_conll_relations((std::filesystem::path(flags.output) / (name + ".json")).string(), by_split[name]);
    std::map<std::string, int64_t> counts;
    const auto instances = discourse_instances(by_split[name], types, level, /*duplicate=*/false);
    for (const DiscourseInstance& i : instances) ++counts[i.labels.front()];
    std::string text;
    for (const auto& [label, n] : counts) text += fmt::format(" {} {}", label, n);
    std::cout << fmt::format("{:<5} {:>6} relations, {:>6} {} instances (by first sense):{}\n", name,
                             by_split[name].size(), instances.size(), sense_level_name(level), text);
  }
  std::cout << fmt::format("{} relations of sections outside the {} preset left out; written to {}\n", unplaced,
                           flags.preset, flags.output);
  return 0;
}

struct ScoreFlags {
  std::string gold, pred, level = "4way";
  bool json = false;
};

void print_report(const DiscourseScores& s, SenseLevel level) {
  std::cout << fmt::format("{} instances, {}: accuracy {:.2f}%, macro-F1 {:.2f}%\n", s.instances,
                           sense_level_name(level), 100 * s.accuracy, 100 * s.macro_f1);
  size_t width = 5;
  for (const std::string& c : s.classes) width = std::max(width, c.size());
  std::cout << fmt::format("{:<{}}  {:>6} {:>6} {:>6}  {:>7} {:>7} {:>7}\n", "class", width, "gold", "pred", "right",
                           "P%", "R%", "F1%");
  for (const auto& [name, c] : s.per_class) {
    std::cout << fmt::format("{:<{}}  {:>6} {:>6} {:>6}  {:>7.2f} {:>7.2f} {:>7.2f}\n", name, width, c.gold,
                             c.predicted, c.correct, 100 * c.precision, 100 * c.recall, 100 * c.f1);
  }
  std::cout << "one-vs-rest F1 per top-level class:";
  for (const auto& [name, f1] : s.binary_f1) std::cout << fmt::format(" {} {:.2f}%", name, 100 * f1);
  std::cout << "\nconfusion (rows gold, columns predicted, in the order above):\n";
  for (size_t g = 0; g < s.classes.size(); ++g) {
    std::cout << fmt::format("{:<{}} ", s.classes[g], width);
    for (const int64_t n : s.confusion[g]) std::cout << fmt::format(" {:>6}", n);
    std::cout << "\n";
  }
}

}  // namespace

Runner register_discourse(CLI::App& root) {
  auto flags = std::make_shared<ScoreFlags>();
  auto split_flags = std::make_shared<SplitFlags>();
  auto corpus_options = std::make_shared<SilverOptions>();
  CLI::App* app = root.add_subcommand("discourse", "tools of the implicit discourse relation recipe");
  app->require_subcommand(1);
  CLI::App* score = app->add_subcommand("score", "score sense predictions against CoNLL-2016 relations.json");
  score->add_option("--gold", flags->gold, "gold relations, one CoNLL-2016 JSON object per line")->required();
  score->add_option("--pred", flags->pred, "predictions, one {\"ID\", \"Sense\"} per line")->required();
  score->add_option("--level", flags->level, "4way (top-level senses) or 11way (level-2 types)")->capture_default_str();
  score->add_flag("--json", flags->json, "print a JSON object");
  CLI::App* split_app = app->add_subcommand("split", "write a corpus's relations as CoNLL-2016 train/dev/test files");
  split_app->add_option("--pdtb2", split_flags->pdtb2, "PDTB 2.0 CSV export (pdtb2.csv)");
  split_app->add_option("--pdtb3", split_flags->pdtb3, "PDTB 3.0 folder with gold/ and raw/");
  split_app->add_option("--conll", split_flags->conll, "CoNLL-2016 relations.json");
  split_app->add_option("--output", split_flags->output, "folder for train.json, dev.json and test.json")->required();
  split_app->add_option("--preset", split_flags->preset, "sections: ji (2-20/0-1/21-22) or lin (2-21/22/23)")
      ->capture_default_str();
  split_app->add_option("--types", split_flags->types, "relation types kept, comma-separated")->capture_default_str();
  split_app->add_option("--level", split_flags->level, "level of the printed counts: 4way or 11way")
      ->capture_default_str();
  CLI::App* corpus = app->add_subcommand("corpus", "mine the silver corpus of explicit relations from HTML manuals");
  corpus->add_option("--docs", corpus_options->docs, "folder searched for .html files (repeatable)")->required();
  corpus->add_option("--output", corpus_options->output, "folder for train/dev/test.json and corpus.json")->required();
  corpus->add_option("--seed", corpus_options->seed, "seed of the split by document")->capture_default_str();
  corpus->add_option("--dev-share", corpus_options->dev_share, "share of documents in dev")->capture_default_str();
  corpus->add_option("--test-share", corpus_options->test_share, "share of documents in test")->capture_default_str();
  return [flags, split_flags, split_app, corpus_options, corpus]() {
    if (split_app->parsed()) return write_splits(*split_flags);
    if (corpus->parsed()) {
      const SilverReport report = build_silver_corpus(*corpus_options);
      std::cout << fmt::format("{} documents, {} paragraphs, {} duplicate pairs dropped\n", report.documents,
                               report.paragraphs, report.duplicates);
      for (const auto& [split, counts] : report.counts) {
        int64_t total = 0;
        std::string text;
        for (const auto& [label, n] : counts) {
          total += n;
          text += fmt::format(" {} {}", label, n);
        }
        std::cout << fmt::format("{:<5} {:>6} relations:{}\n", split, total, text);
      }
      return 0;
    }
    const SenseLevel level = parse_sense_level(flags->level, "--level");
    const std::vector<DiscourseRelation> gold = read_conll_relations(flags->gold);
    const DiscourseScores s = score_relations(gold, read_sense_predictions(flags->pred), level);
    if (!flags->json) {
      print_report(s, level);
      return 0;
    }
    nlohmann::ordered_json per_class = nlohmann::ordered_json::object();
    for (const auto& [name, c] : s.per_class) {
      per_class[name] = {{"precision", c.precision}, {"recall", c.recall}, {"f1", c.f1}};
    }
    std::cout << nlohmann::ordered_json{{"accuracy", s.accuracy}, {"macro_f1", s.macro_f1}, {"per_class", per_class}}
                     .dump()
              << "\n";
    return 0;
  };
}

}  // namespace foldtron::cli
