// `foldtron discourse`: the implicit discourse relation recipe's tools.
//   foldtron discourse score --gold RELATIONS.json --pred PRED.jsonl --level 4way|11way [--json]
// scores predictions against CoNLL-2016 relations (tasks/discourse/metrics.h): with --json one
// object {"accuracy", "macro_f1", "per_class": {sense: {"precision", "recall", "f1"}}} (DESIGN.md's
// contract); else a report with the per-class counts, the one-vs-rest F1 of each top-level class
// and the confusion matrix.
#include <algorithm>
#include <iostream>
#include <memory>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "apps/commands.h"
#include "tasks/discourse/metrics.h"
#include "tasks/discourse/relations.h"

namespace foldtron::cli {
namespace {

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
  CLI::App* app = root.add_subcommand("discourse", "tools of the implicit discourse relation recipe");
  app->require_subcommand(1);
  CLI::App* score = app->add_subcommand("score", "score sense predictions against CoNLL-2016 relations.json");
  score->add_option("--gold", flags->gold, "gold relations, one CoNLL-2016 JSON object per line")->required();
  score->add_option("--pred", flags->pred, "predictions, one {\"ID\", \"Sense\"} per line")->required();
  score->add_option("--level", flags->level, "4way (top-level senses) or 11way (level-2 types)")->capture_default_str();
  score->add_flag("--json", flags->json, "print a JSON object");
  return [flags]() {
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
