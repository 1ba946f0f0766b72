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
//   foldtron discourse train --config FILE [--set discourse.KEY=V ...] [--save DIR] [--predictions F]
// trains a classifier (tasks/discourse/trainer.h) alone or under mpirun (data parallel; --tp/--pp
// split the contextual encoder), keeping the epoch best on dev; saves it to checkpoint.save.
//   foldtron discourse eval --load DIR [--split dev|test] [--json] [--set discourse.data=DIR]
// scores a saved classifier on a split of its corpus (or of another, by --set).
//   foldtron discourse predict --load DIR --input RELATIONS.json --output PRED.jsonl
// writes {"ID", "Sense", "probabilities"} for each relation of the classifier's types and level.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "apps/cli_options.h"
#include "apps/commands.h"
#include "config/layout.h"
#include "core/log.h"
#include "parallel/mpi_runtime.h"
#include "parallel/process_groups.h"
#include "tasks/discourse/classifier.h"
#include "tasks/discourse/trainer.h"
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

struct ModelFlags {
  ConfigOptions config, eval_config, predict_config;
  std::string device = "auto", save, predictions, load, split = "test", input, output;
  bool json = false;
};

// A job's process groups for the discourse section's layout (every rank, after validation).
std::unique_ptr<ProcessGroups> job_groups(const Config& config, int64_t world, bool cuda) {
  const Topology topology(layout_of(config.parallel, world));
  return std::make_unique<ProcessGroups>(topology, make_comm_options(config.parallel, cuda));
}

int train_classifier(const ModelFlags& flags, const MpiRuntime& mpi) {
  std::vector<std::string> overrides;
  if (!flags.save.empty()) overrides.push_back("checkpoint.save=" + yaml_quoted(flags.save));
  const Config config = flags.config.load(overrides);
  log::set_level(config.logging.level);
  validate_discourse_config(config);  // every rank, before any communicator exists
  if (mpi.rank() == 0) log::info("discourse", "resolved configuration:\n{}", config_to_yaml(config));
  const bool cuda = use_cuda(flags.device);
  const std::unique_ptr<ProcessGroups> groups = job_groups(config, mpi.size(), cuda);
  DiscourseTrainOptions options;
  options.device = rank_device(cuda, config.parallel);
  options.predictions = flags.predictions;
  train_discourse(config, *groups, options);
  return 0;
}

// `discourse eval` and `discourse predict`: a saved classifier on a split or on a file.
int apply_classifier(const ModelFlags& flags, const MpiRuntime& mpi, bool predict) {
  if (!predict && flags.split != "dev" && flags.split != "test" && flags.split != "train") {
    throw UsageError(fmt::format("--split {} is not a split", flags.split), "use dev, test or train");
  }
  // The saved config with the flags on top (--set discourse.data=..., the layout).
  const Config config = (predict ? flags.predict_config : flags.eval_config).load_over(discourse_saved_config(flags.load));
  log::set_level(config.logging.level);
  validate_discourse_config(config);
  const bool cuda = use_cuda(flags.device);
  const std::unique_ptr<ProcessGroups> groups = job_groups(config, mpi.size(), cuda);
  const std::unique_ptr<DiscourseClassifier> classifier =
      DiscourseClassifier::load(flags.load, config, *groups, rank_device(cuda, config.parallel));
  const DiscourseConfig& d = classifier->config().discourse;
  std::vector<DiscourseInstance> instances;
  if (predict) {
    const std::vector<std::string> types = discourse_types(d);
    // Blind input too: every relation of the types, whatever its senses (none, or not a class).
    for (const DiscourseRelation& r : read_conll_relations(flags.input, /*senses_required=*/false)) {
      if (std::find(types.begin(), types.end(), r.type) != types.end()) {
        instances.push_back({r.id, r.arg1, r.arg2, {}, r.connective});
      }
    }
  } else {
    instances = read_discourse_split(d, flags.split, false);
  }
  const torch::Tensor probs = classifier->predict(classifier->encode(instances));
  if (mpi.rank() != 0) return 0;
  if (predict) {
    write_discourse_predictions(flags.output, instances, classifier->vocabularies().classes, probs);
    std::cout << fmt::format("{} predictions written to {}\n", instances.size(), flags.output);
    return 0;
  }
  const DiscourseScores s = classifier->score(instances, probs);
  if (flags.json) {
    std::cout << scores_json(s).dump() << "\n";
  } else {
    print_report(s, classifier->level());
  }
  return 0;
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
  auto model_flags = std::make_shared<ModelFlags>();
  CLI::App* train = app->add_subcommand("train", "train a discourse relation classifier (the discourse section)");
  model_flags->config.add_to(*train);
  train->add_option("--save", model_flags->save, "folder the kept classifier is saved to (checkpoint.save)");
  train->add_option("--predictions", model_flags->predictions, "JSON lines of the kept classifier's test predictions");
  add_device_option(*train, model_flags->device);
  CLI::App* eval = app->add_subcommand("eval", "score a saved classifier on a split of its corpus");
  CLI::App* predict = app->add_subcommand("predict", "predict the relations of a CoNLL-2016 relations.json");
  for (CLI::App* sub : {eval, predict}) {
    sub->add_option("--load", model_flags->load, "folder foldtron discourse train saved")->required();
    add_device_option(*sub, model_flags->device);
  }
  model_flags->eval_config.add_to(*eval);
  model_flags->predict_config.add_to(*predict);
  eval->add_option("--split", model_flags->split, "dev, test or train")->capture_default_str();
  eval->add_flag("--json", model_flags->json, "print a JSON object");
  predict->add_option("--input", model_flags->input, "relations, one CoNLL-2016 JSON object per line")->required();
  predict->add_option("--output", model_flags->output, "predictions, JSON lines")->required();
  return [flags, split_flags, split_app, corpus_options, corpus, model_flags, train, eval, predict]() {
    if (train->parsed() || eval->parsed() || predict->parsed()) {
      MpiRuntime mpi(nullptr, nullptr);
      return run_guarded([&]() -> int {
        if (train->parsed()) return train_classifier(*model_flags, mpi);
        return apply_classifier(*model_flags, mpi, predict->parsed());
      });
    }
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
