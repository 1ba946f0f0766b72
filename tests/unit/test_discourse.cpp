// Discourse relation evaluation: senses at the 4-way and 11-way levels; the multi-sense rule,
// accuracy, per-class precision/recall/F1, macro-F1, one-vs-rest F1 and the confusion matrix
// against figures computed by hand; the CoNLL relations.json and prediction readers on fixtures
// written here (and their errors, naming file and line); `foldtron discourse score` on them.
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/errors.h"
#include "run_command.h"
#include "tasks/discourse/metrics.h"
#include "tasks/discourse/relations.h"

namespace foldtron::testing {
namespace {
namespace fs = std::filesystem;

fs::path scratch() {
  static const fs::path dir = [] {
    const fs::path d = fs::temp_directory_path() / fmt::format("foldtron_discourse_{}", ::getpid());
    fs::remove_all(d);
    fs::create_directories(d);
    return d;
  }();
  return dir;
}

fs::path write_file(const std::string& name, const std::string& text) {
  const fs::path path = scratch() / name;
  std::ofstream(path) << text;
  return path;
}

// Six instances: gold senses and a prediction each (see the hand computation in each test).
const std::vector<std::vector<std::string>> kGold{{"Expansion.Conjunction"},
                                                  {"Contingency.Cause.Reason", "Expansion.Conjunction"},
                                                  {"Comparison.Contrast"},
                                                  {"Temporal.Asynchronous.Precedence"},
                                                  {"Contingency.Cause.Result"},
                                                  {"Expansion.Conjunction"}};
const std::vector<std::string> kPredicted{"Expansion.Conjunction", "Expansion.Instantiation", "Expansion.Conjunction",
                                          "Temporal.Synchrony",    "Comparison.Contrast",     "Contingency.Cause"};

TEST(DiscourseSenses, Levels) {
  EXPECT_EQ(sense_at_level("Contingency.Cause.Reason", SenseLevel::kFourWay), "Contingency");
  EXPECT_EQ(sense_at_level("Contingency.Cause.Reason", SenseLevel::kElevenWay), "Contingency.Cause");
  EXPECT_EQ(sense_at_level("Expansion.Conjunction", SenseLevel::kElevenWay), "Expansion.Conjunction");
  EXPECT_EQ(sense_at_level("EntRel", SenseLevel::kElevenWay), "EntRel");
  EXPECT_EQ(sense_at_level("Expansion", SenseLevel::kFourWay), "Expansion");
  EXPECT_EQ(parse_sense_level("11way", "--level"), SenseLevel::kElevenWay);
  EXPECT_THROW(parse_sense_level("2way", "--level"), UsageError);
}

TEST(DiscourseMetrics, FourWayByHand) {
  // Gold labels: Exp, Exp (the prediction matches the second sense), Comp, Temp, Cont, Exp;
  // predictions: Exp, Exp, Exp, Temp, Comp, Cont. Right: 1, 2, 4.
  const DiscourseScores s = score_senses(kGold, kPredicted, SenseLevel::kFourWay);
  EXPECT_EQ(s.instances, 6);
  EXPECT_DOUBLE_EQ(s.accuracy, 0.5);
  ASSERT_EQ(s.per_class.size(), 4u);
  EXPECT_EQ(s.per_class.at("Expansion").gold, 3);
  EXPECT_EQ(s.per_class.at("Expansion").predicted, 3);
  EXPECT_DOUBLE_EQ(s.per_class.at("Expansion").precision, 2.0 / 3);
  EXPECT_DOUBLE_EQ(s.per_class.at("Expansion").recall, 2.0 / 3);
  EXPECT_DOUBLE_EQ(s.per_class.at("Expansion").f1, 2.0 / 3);
  EXPECT_DOUBLE_EQ(s.per_class.at("Temporal").f1, 1.0);
  EXPECT_DOUBLE_EQ(s.per_class.at("Comparison").f1, 0.0);
  EXPECT_DOUBLE_EQ(s.per_class.at("Contingency").f1, 0.0);
  EXPECT_NEAR(s.macro_f1, 5.0 / 12, 1e-15);
  EXPECT_EQ(s.classes, (std::vector<std::string>{"Comparison", "Contingency", "Expansion", "Temporal"}));
  const std::vector<std::vector<int64_t>> confusion{{0, 0, 1, 0}, {1, 0, 0, 0}, {0, 1, 2, 0}, {0, 0, 0, 1}};
  EXPECT_EQ(s.confusion, confusion);
}

TEST(DiscourseMetrics, ElevenWayByHand) {
  // Gold labels: E.Conj, Cont.Cause (no sense matches E.Inst: the first), Comp.Contrast,
  // T.Async, Cont.Cause, E.Conj; only instance 1 is right.
  const DiscourseScores s = score_senses(kGold, kPredicted, SenseLevel::kElevenWay);
  EXPECT_NEAR(s.accuracy, 1.0 / 6, 1e-15);
  ASSERT_EQ(s.per_class.size(), 6u) << "classes of gold labels and of predictions";
  EXPECT_EQ(s.per_class.at("Contingency.Cause").gold, 2);
  EXPECT_EQ(s.per_class.at("Contingency.Cause").predicted, 1);
  EXPECT_DOUBLE_EQ(s.per_class.at("Expansion.Conjunction").f1, 0.5);
  EXPECT_EQ(s.per_class.at("Temporal.Synchrony").gold, 0);
  EXPECT_DOUBLE_EQ(s.per_class.at("Temporal.Synchrony").precision, 0.0);
  EXPECT_NEAR(s.macro_f1, 0.5 / 6, 1e-15);
  // One-vs-rest by top level: Expansion gold {1, 6}, predicted {1, 2, 3}, right {1}: P 1/3, R 1/2;
  // Temporal gold {4}, predicted {4}.
  EXPECT_NEAR(s.binary_f1.at("Expansion"), 0.4, 1e-15);
  EXPECT_DOUBLE_EQ(s.binary_f1.at("Temporal"), 1.0);
  EXPECT_DOUBLE_EQ(s.binary_f1.at("Comparison"), 0.0);
  EXPECT_DOUBLE_EQ(s.binary_f1.at("Contingency"), 0.0);
}

std::string relation_line(int id, const std::vector<std::string>& senses, const std::string& type = "Implicit") {
  return nlohmann::json{{"ID", id},
                        {"DocID", "wsj_2201"},
                        {"Type", type},
                        {"Sense", senses},
                        {"Arg1", {{"RawText", "It rained"}}},
                        {"Arg2", {{"RawText", "the game was cancelled"}}},
                        {"Connective", {{"RawText", ""}}}}
             .dump();
}

fs::path gold_file() {
  std::string text;
  for (size_t i = 0; i < kGold.size(); ++i) text += relation_line(static_cast<int>(100 + i), kGold[i]) + "\n";
  return write_file("relations.json", text);
}

fs::path prediction_file() {
  std::string text;
  for (size_t i = 0; i < kPredicted.size(); ++i) {
    // Strings, and (one) a CoNLL-style list.
    const nlohmann::json sense = i == 3 ? nlohmann::json::array({kPredicted[i]}) : nlohmann::json(kPredicted[i]);
    text += nlohmann::json{{"ID", 100 + static_cast<int>(i)}, {"Sense", sense}}.dump() + "\n";
  }
  return write_file("pred.jsonl", text);
}

TEST(DiscourseRelations, ReadsCoNLLRelationsAndPredictions) {
  const std::vector<DiscourseRelation> gold = read_conll_relations(gold_file().string());
  ASSERT_EQ(gold.size(), 6u);
  EXPECT_EQ(gold[1].id, "101");
  EXPECT_EQ(gold[1].senses, kGold[1]);
  EXPECT_EQ(gold[1].arg2, "the game was cancelled");
  EXPECT_EQ(gold[1].type, "Implicit");
  EXPECT_EQ(wsj_section(gold[1].doc_id), 22);
  EXPECT_EQ(wsj_section("doc7"), -1);
  const auto predictions = read_sense_predictions(prediction_file().string());
  ASSERT_EQ(predictions.size(), 6u);
  EXPECT_EQ(predictions.at("103"), "Temporal.Synchrony");
  const DiscourseScores s = score_relations(gold, predictions, SenseLevel::kFourWay);
  EXPECT_DOUBLE_EQ(s.accuracy, 0.5);
}

TEST(DiscourseRelations, MalformedInputNamesFileAndLine) {
  const auto expect_error = [](const std::string& text, const std::string& expected, bool predictions = false) {
    const fs::path path = write_file(predictions ? "bad_pred.jsonl" : "bad.json", text);
    try {
      if (predictions) {
        read_sense_predictions(path.string());
      } else {
        read_conll_relations(path.string());
      }
      ADD_FAILURE() << "no error for: " << text;
    } catch (const DataError& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find(path.string() + ":2:"), std::string::npos) << what;
      EXPECT_NE(what.find(expected), std::string::npos) << what;
    }
  };
  const std::string good = relation_line(1, {"Expansion"}) + "\n";
  expect_error(good + "{\"ID\": 2, \"Sense\": [\n", "not JSON");
  expect_error(good + "[1, 2]\n", "not a JSON object");
  expect_error(good + relation_line(1, {"Temporal"}) + "\n", "appears twice");
  expect_error(good + "{\"ID\": 2, \"Sense\": [], \"Arg1\": {}, \"Arg2\": {}}\n", "'Sense'");
  expect_error(good + "{\"ID\": 2, \"Sense\": [\"Expansion\"], \"Arg2\": {}}\n", "'Arg1' is missing");
  expect_error(good + "{\"Sense\": [\"Expansion\"], \"Arg1\": {}, \"Arg2\": {}}\n", "'ID'");
  expect_error("{\"ID\": 1, \"Sense\": \"Expansion\"}\n{\"ID\": 1, \"Sense\": \"Temporal\"}\n", "a second prediction",
               true);
  expect_error("{\"ID\": 1, \"Sense\": \"Expansion\"}\n{\"ID\": 2}\n", "'Sense'", true);
  EXPECT_THROW(read_conll_relations((scratch() / "missing.json").string()), DataError);
  // Predictions and gold must cover each other.
  const std::vector<DiscourseRelation> gold = read_conll_relations(gold_file().string());
  std::map<std::string, std::string> predictions = read_sense_predictions(prediction_file().string());
  predictions.erase("104");
  EXPECT_THROW(score_relations(gold, predictions, SenseLevel::kFourWay), DataError);
  predictions["104"] = "Temporal";
  predictions["999"] = "Temporal";
  EXPECT_THROW(score_relations(gold, predictions, SenseLevel::kFourWay), DataError);
}

TEST(DiscourseScore, CommandPrintsTheContractsJson) {
  int code = 0;
  const std::string out =
      run_command(fmt::format("{} discourse score --gold {} --pred {} --level 11way --json 2>&1", FOLDTRON_BINARY,
                              gold_file().string(), prediction_file().string()),
                  &code);
  ASSERT_EQ(code, 0) << out;
  const nlohmann::json j = nlohmann::json::parse(out);
  EXPECT_NEAR(j.at("accuracy").get<double>(), 1.0 / 6, 1e-12);
  EXPECT_NEAR(j.at("macro_f1").get<double>(), 0.5 / 6, 1e-12);
  EXPECT_EQ(j.at("per_class").size(), 6u);
  EXPECT_DOUBLE_EQ(j.at("per_class").at("Expansion.Conjunction").at("recall").get<double>(), 0.5);
  const std::string report = run_command(
      fmt::format("{} discourse score --gold {} --pred {} 2>&1", FOLDTRON_BINARY, gold_file().string(),
                  prediction_file().string()),
      &code);
  ASSERT_EQ(code, 0) << report;
  EXPECT_NE(report.find("6 instances, 4way: accuracy 50.00%, macro-F1 41.67%"), std::string::npos) << report;
  EXPECT_NE(report.find("confusion"), std::string::npos) << report;
}

}  // namespace
}  // namespace foldtron::testing
