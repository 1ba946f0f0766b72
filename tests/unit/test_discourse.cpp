// Discourse relation evaluation: senses at the 4-way and 11-way levels; the multi-sense rule,
// accuracy, per-class precision/recall/F1, macro-F1, one-vs-rest F1 and the confusion matrix
// against figures computed by hand; the CoNLL relations.json and prediction readers on fixtures
// written here (and their errors, naming file and line); `foldtron discourse score` on them; the
// PDTB 2.0 CSV and PDTB 3.0 readers on fixtures in those formats, the split presets and the
// instances at each level (11-way exclusions, second senses); the silver corpus: paragraphs of
// HTML, the mining rules, splits by document without a shared pair, and its errors.
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/errors.h"
#include "core/files.h"
#include "run_command.h"
#include "tasks/discourse/metrics.h"
#include "tasks/discourse/pdtb.h"
#include "tasks/discourse/relations.h"
#include "tasks/discourse/silver.h"
#include "scratch_files.h"

namespace foldtron::testing {
namespace {
namespace fs = std::filesystem;

fs::path scratch() {
  static const fs::path dir = [] {
    const fs::path d = fs::temp_directory_path() / fmt::format("foldtron_discourse_{}", ::getpid());
    remove_tree(d);
    fs::create_directories(d);
    return d;
  }();
  return dir;
}

fs::path write_file(const std::string& name, const std::string& text) {
  return testing::write_file(scratch() / name, text);
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
  // One-vs-rest at the top level, with the multi-sense rule there: instance 2's prediction
  // (Expansion) matches its second sense. Expansion gold {1, 2, 6}, predicted {1, 2, 3}, right
  // {1, 2}; Temporal gold {4}, predicted {4}: the same as the 4-way per-class F1.
  EXPECT_NEAR(s.binary_f1.at("Expansion"), 2.0 / 3, 1e-15);
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

// Blind input to classify: "Sense": [] or none reads without senses when they are not required.
TEST(DiscourseRelations, BlindRelationsReadWithoutSenses) {
  const fs::path path = write_file("blind.json", "{\"ID\": 1, \"Sense\": [], \"Arg1\": {\"RawText\": \"a\"}, "
                                                 "\"Arg2\": {\"RawText\": \"b\"}}\n{\"ID\": 2, \"Arg1\": "
                                                 "{\"RawText\": \"c\"}, \"Arg2\": {\"RawText\": \"d\"}}\n");
  const std::vector<DiscourseRelation> relations = read_conll_relations(path.string(), false);
  ASSERT_EQ(relations.size(), 2u);
  EXPECT_TRUE(relations[0].senses.empty());
  EXPECT_EQ(relations[1].arg2, "d");
  EXPECT_THROW(read_conll_relations(path.string()), DataError);
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
  expect_error(good + "{\"ID\": 2, \"Sense\": [\"Expansion\"], \"Arg1\": \"text\", \"Arg2\": {}}\n",
               "'Arg1' is not an object");
  expect_error(good + "{\"ID\": 2, \"Sense\": [3], \"Arg1\": {}, \"Arg2\": {}}\n", "other than a sense name");
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


// The pdtb2.csv header: 57 columns.
std::vector<std::string> pdtb2_header() {
  std::vector<std::string> h{"Relation", "Section", "FileNumber"};
  for (const char* c : {"SpanList", "GornList", "Trees", "RawText", "StringPosition"}) h.push_back(std::string("Connective_") + c);
  for (const char* c : {"SentenceNumber", "ConnHead", "Conn1", "Conn2", "ConnHeadSemClass1", "ConnHeadSemClass2",
                        "Conn2SemClass1", "Conn2SemClass2"}) {
    h.push_back(c);
  }
  const std::vector<std::string> attribution{"Source", "Type", "Polarity", "Determinacy", "SpanList", "GornList",
                                             "Trees", "RawText"};
  for (const std::string& a : attribution) h.push_back("Attribution_" + a);
  for (const std::string arg : {"Arg1", "Arg2"}) {
    for (const char* c : {"SpanList", "GornList", "Trees", "RawText"}) h.push_back(arg + "_" + c);
    for (const std::string& a : attribution) h.push_back(arg + "_Attribution_" + a);
  }
  for (const std::string sup : {"Sup1", "Sup2"}) {
    for (const char* c : {"SpanList", "GornList", "Trees", "RawText"}) h.push_back(sup + "_" + c);
  }
  h.push_back("FullRawText");
  return h;
}

std::string csv_quote(const std::string& field) {
  std::string out = "\"";
  for (const char c : field) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

// A row of the export with the named fields set and the others empty.
std::string pdtb2_row(const std::map<std::string, std::string>& values) {
  std::vector<std::string> fields;
  for (const std::string& name : pdtb2_header()) {
    const auto it = values.find(name);
    fields.push_back(it == values.end() ? "" : csv_quote(it->second));
  }
  std::string row;
  for (size_t i = 0; i < fields.size(); ++i) row += (i ? "," : "") + fields[i];
  return row + "\r\n";
}

fs::path pdtb2_file() {
  std::string text;
  const std::vector<std::string> header = pdtb2_header();
  for (size_t i = 0; i < header.size(); ++i) text += (i ? "," : "") + header[i];
  text += "\r\n";
  text += pdtb2_row({{"Relation", "Implicit"}, {"Section", "21"}, {"FileNumber", "05"}, {"Conn1", "because"},
                     {"ConnHeadSemClass1", "Contingency.Cause.Reason"}, {"ConnHeadSemClass2", "Expansion.Conjunction"},
                     {"Arg1_RawText", "Prices fell, \"sharply\",\nin May"}, {"Arg2_RawText", "demand was weak"}});
  text += pdtb2_row({{"Relation", "EntRel"}, {"Section", "21"}, {"FileNumber", "05"}, {"Arg1_RawText", "a"},
                     {"Arg2_RawText", "b"}});
  text += pdtb2_row({{"Relation", "Explicit"}, {"Section", "3"}, {"FileNumber", "11"}, {"Connective_RawText", "but"},
                     {"ConnHeadSemClass1", "Comparison.Contrast"}, {"Arg1_RawText", "x"}, {"Arg2_RawText", "y"}});
  text += pdtb2_row({{"Relation", "Implicit"}, {"Section", "3"}, {"FileNumber", "11"}, {"Conn1", "if"},
                     {"ConnHeadSemClass1", "Contingency.Condition"}, {"Arg1_RawText", "p"}, {"Arg2_RawText", "q"}});
  return write_file("pdtb2.csv", text);
}

TEST(DiscoursePdtb, ReadsThePdtb2CsvExport) {
  const std::vector<DiscourseRelation> r = read_pdtb2_csv(pdtb2_file().string());
  ASSERT_EQ(r.size(), 4u);
  EXPECT_EQ(r[0].type, "Implicit");
  EXPECT_EQ(r[0].doc_id, "wsj_2105");
  EXPECT_EQ(r[0].id, "wsj_2105:1");
  EXPECT_EQ(r[0].senses, (std::vector<std::string>{"Contingency.Cause.Reason", "Expansion.Conjunction"}));
  EXPECT_EQ(r[0].arg1, "Prices fell, \"sharply\",\nin May") << "commas, quotes and a newline inside a field";
  EXPECT_EQ(r[0].connective, "because");
  EXPECT_EQ(r[1].senses, (std::vector<std::string>{"EntRel"}));
  EXPECT_EQ(r[2].doc_id, "wsj_0311");
  EXPECT_EQ(r[2].connective, "but");
  // Instances: implicit only; 4-way keeps both senses (or one copy each with duplicate); 11-way
  // drops Condition (and with it the fourth relation).
  const auto four = discourse_instances(r, {"Implicit"}, SenseLevel::kFourWay, false);
  ASSERT_EQ(four.size(), 2u);
  EXPECT_EQ(four[0].labels, (std::vector<std::string>{"Contingency", "Expansion"}));
  EXPECT_EQ(discourse_instances(r, {"Implicit"}, SenseLevel::kFourWay, true).size(), 3u);
  const auto eleven = discourse_instances(r, {"Implicit"}, SenseLevel::kElevenWay, false);
  ASSERT_EQ(eleven.size(), 1u);
  EXPECT_EQ(eleven[0].labels, (std::vector<std::string>{"Contingency.Cause", "Expansion.Conjunction"}));
  EXPECT_EQ(eleven_way_types().size(), 11u);
}

TEST(DiscoursePdtb, Pdtb2ErrorsNameFileRowAndField) {
  const std::vector<std::string> header = pdtb2_header();
  std::string head;
  for (size_t i = 0; i < header.size(); ++i) head += (i ? "," : "") + header[i];
  head += "\n";
  const auto expect_error = [](const std::string& text, const std::string& expected) {
    const fs::path path = write_file("bad_pdtb2.csv", text);
    try {
      read_pdtb2_csv(path.string());
      ADD_FAILURE() << "no error for " << expected;
    } catch (const DataError& e) {
      EXPECT_NE(std::string(e.what()).find(expected), std::string::npos) << e.what();
    }
  };
  expect_error("Relation,Section\nImplicit,2\n", "has no column 'FileNumber'");
  expect_error(head + "Implicit,2,5\n", ":2: 3 fields where the header has 57");
  expect_error(head + pdtb2_row({{"Relation", "Implicit"}, {"Section", "two"}, {"FileNumber", "5"}}),
               ":2: field 'Section' is 'two', not a number");
  expect_error(head + "\"Implicit,2,5\n", ":2: a quoted field is never closed");
  expect_error("", "is empty");
}

// A PDTB 3.0 gold line: the type, connective span, connective and senses, argument spans.
std::string pdtb3_line(const std::string& type, const std::string& conn_span, const std::string& conn,
                       const std::string& sense1, const std::string& sense2, const std::string& arg1,
                       const std::string& arg2) {
  std::vector<std::string> f(34);
  f[0] = type;
  f[1] = conn_span;
  f[7] = conn;
  f[8] = sense1;
  f[11] = sense2;
  f[14] = arg1;
  f[20] = arg2;
  std::string line;
  for (size_t i = 0; i < f.size(); ++i) line += (i ? "|" : "") + f[i];
  return line + "\n";
}

TEST(DiscoursePdtb, ReadsPdtb3GoldAndRawText) {
  const fs::path root = scratch() / "pdtb3";
  fs::create_directories(root / "gold" / "00");
  fs::create_directories(root / "raw" / "00");
  //                                   0         1         2         3         4
  //                                   01234567890123456789012345678901234567890123
  std::ofstream(root / "raw" / "00" / "wsj_0001") << "It rained.\nThe game was cancelled, but we stayed.";
  std::ofstream(root / "gold" / "00" / "wsj_0001")
      << pdtb3_line("Implicit", "", "so", "Contingency.Cause.Result", "", "0..9", "11..33")
      << pdtb3_line("Explicit", "35..38", "", "Comparison.Concession.Arg2-as-denier", "", "11..33", "39..48")
      << pdtb3_line("Implicit", "", "and", "Expansion.Conjunction", "Temporal.Synchronous", "0..2;3..9", "11..19");
  const std::vector<DiscourseRelation> r = read_pdtb3(root.string());
  ASSERT_EQ(r.size(), 3u);
  EXPECT_EQ(r[0].id, "wsj_0001:1");
  EXPECT_EQ(r[0].arg1, "It rained");
  EXPECT_EQ(r[0].arg2, "The game was cancelled");
  EXPECT_EQ(r[0].connective, "so");
  EXPECT_EQ(r[1].connective, "but");
  EXPECT_EQ(r[1].arg2, "we stayed");
  EXPECT_EQ(r[2].arg1, "It rained") << "discontinuous spans joined by a space";
  EXPECT_EQ(r[2].senses, (std::vector<std::string>{"Expansion.Conjunction", "Temporal.Synchronous"}));
  // A span past the text names the file and line.
  std::ofstream(root / "gold" / "00" / "wsj_0001") << pdtb3_line("Implicit", "", "so", "Expansion", "", "0..9", "11..99");
  try {
    read_pdtb3(root.string());
    ADD_FAILURE() << "no error for a span past the text";
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find("wsj_0001:1: Arg2: span 11..99 lies outside"), std::string::npos) << e.what();
  }
  EXPECT_THROW(read_pdtb3((scratch() / "nothing").string()), DataError);
  const auto expect_error = [&](const std::string& line, const std::string& expected) {
    std::ofstream(root / "gold" / "00" / "wsj_0001") << line;
    try {
      read_pdtb3(root.string());
      ADD_FAILURE() << "no error for " << expected;
    } catch (const DataError& e) {
      EXPECT_NE(std::string(e.what()).find(expected), std::string::npos) << e.what();
    }
  };
  expect_error("Implicit|a|b\n", "wsj_0001:1: 3 pipe-delimited fields, fewer than the 21");
  expect_error(pdtb3_line("Implicit", "", "so", "Expansion", "", "0-9", "11..33"), "span '0-9' is not begin..end");
  expect_error(pdtb3_line("", "", "so", "Expansion", "", "0..9", "11..33"), "field 1 (the relation type) is empty");
  std::ofstream(root / "gold" / "00" / "wsj_0002") << pdtb3_line("Implicit", "", "so", "Expansion", "", "0..9", "11..33");
  expect_error(pdtb3_line("Implicit", "", "so", "Expansion", "", "0..9", "11..33"), "cannot read the PDTB 3.0 raw text");
}

TEST(DiscoursePdtb, SplitCommandWritesCoNLLFilesThatScore) {
  const fs::path out = scratch() / "splits";
  int code = 0;
  const std::string log = run_command(fmt::format("{} discourse split --pdtb2 {} --output {} --preset ji 2>&1",
                                                  FOLDTRON_BINARY, pdtb2_file().string(), out.string()),
                                      &code);
  ASSERT_EQ(code, 0) << log;
  // Implicit relations only: section 21 (Ji: test) and section 3 (train); none in dev.
  const std::vector<DiscourseRelation> test = read_conll_relations((out / "test.json").string());
  ASSERT_EQ(test.size(), 1u);
  EXPECT_EQ(test[0].senses, (std::vector<std::string>{"Contingency.Cause.Reason", "Expansion.Conjunction"}));
  EXPECT_EQ(test[0].arg1, "Prices fell, \"sharply\",\nin May");
  EXPECT_EQ(read_conll_relations((out / "train.json").string()).size(), 1u);
  EXPECT_EQ(read_conll_relations((out / "dev.json").string()).size(), 0u);
  EXPECT_NE(log.find("test       1 relations,      1 4way instances (by first sense): Contingency 1"), std::string::npos)
      << log;
  // The written gold scores a prediction of its second sense as right.
  const fs::path pred = write_file("split_pred.jsonl", "{\"ID\": \"wsj_2105:1\", \"Sense\": \"Expansion\"}\n");
  const std::string json = run_command(fmt::format("{} discourse score --gold {} --pred {} --json 2>&1", FOLDTRON_BINARY,
                                                   (out / "test.json").string(), pred.string()),
                                       &code);
  ASSERT_EQ(code, 0) << json;
  EXPECT_DOUBLE_EQ(nlohmann::json::parse(json).at("accuracy").get<double>(), 1.0);
  // A corpus whose documents are not WSJ's cannot be split by section.
  const fs::path manual = write_file("manual.json", "{\"ID\": 1, \"DocID\": \"manual/page.html\", \"Type\": "
                                                     "\"Implicit\", \"Sense\": [\"Expansion\"], \"Arg1\": {}, "
                                                     "\"Arg2\": {}}\n");
  const std::string refused = run_command(fmt::format("{} discourse split --conll {} --output {} 2>&1", FOLDTRON_BINARY,
                                                      manual.string(), (scratch() / "refused").string()),
                                          &code);
  EXPECT_NE(code, 0);
  EXPECT_NE(refused.find("has document id 'manual/page.html', not wsj_SSNN"), std::string::npos) << refused;
}

TEST(DiscoursePdtb, SplitPresets) {
  EXPECT_EQ(split_of(2, SplitPreset::kJi), "train");
  EXPECT_EQ(split_of(20, SplitPreset::kJi), "train");
  EXPECT_EQ(split_of(1, SplitPreset::kJi), "dev");
  EXPECT_EQ(split_of(22, SplitPreset::kJi), "test");
  EXPECT_EQ(split_of(23, SplitPreset::kJi), "");
  EXPECT_EQ(split_of(21, SplitPreset::kLin), "train");
  EXPECT_EQ(split_of(22, SplitPreset::kLin), "dev");
  EXPECT_EQ(split_of(23, SplitPreset::kLin), "test");
  EXPECT_EQ(split_of(0, SplitPreset::kLin), "");
  EXPECT_EQ(parse_split_preset("lin", "--preset"), SplitPreset::kLin);
  EXPECT_THROW(parse_split_preset("random", "--preset"), UsageError);
}


TEST(DiscourseSilver, ParagraphsOfHtml) {
  const std::string html =
      "<html><body><div><p class=\"para\">The <a href=\"x\">server</a> keeps&nbsp;a log of every &quot;query&quot; "
      "&amp; its plan &#8212; as &#x201C;text&#x201D;.</p>"
      "<pre><p>not prose, inside pre, with enough words to count</p></pre>"
      "<p>x = 1; y = 2; z = 3;</p><P>Short one.</P>"
      "<p>An unclosed paragraph that ends where the next block starts here<div>other</div>"
      "<PRE>code in an upper-case block, long enough to look like prose here</PRE>"
      "<p>One line<br>and the next line of the same paragraph</p></body></html>";
  const std::vector<std::string> p = html_paragraphs(html);
  ASSERT_EQ(p.size(), 3u);
  EXPECT_EQ(p[0], "The server keeps a log of every \"query\" & its plan \u2014 as \u201ctext\u201d.");
  EXPECT_EQ(p[1], "An unclosed paragraph that ends where the next block starts here");
  EXPECT_EQ(p[2], "One line and the next line of the same paragraph") << "a line break separates words";
  EXPECT_EQ(html_paragraphs("<p>A lone &#xD800; surrogate stays as written in this text</p>").at(0),
            "A lone &#xD800; surrogate stays as written in this text");
}

TEST(DiscourseSilver, MiningRules) {
  const std::vector<DiscourseRelation> r = mine_relations(
      "doc", {"The index makes lookups fast for large tables. However, it slows down every insert into the table. "
              "Short. Therefore, this.",
              "Vacuum reclaims the space of dead rows, because updates never overwrite a row in place.",
              "The query runs in parallel, even though the table is small and fits in memory.",
              "It works because of magic.",
              "The whole request fails with an error message because of a timeout in the backend.",
              "It returns the current time (as the clock reads it, but as a text string) to the caller.",
              "A setting can be changed at run time, unless the server was started with it fixed."});
  ASSERT_EQ(r.size(), 4u);
  EXPECT_EQ(r[0].arg1, "The index makes lookups fast for large tables.");
  EXPECT_EQ(r[0].arg2, "It slows down every insert into the table.");
  EXPECT_EQ(r[0].senses, (std::vector<std::string>{"Comparison.Contrast"}));
  EXPECT_EQ(r[0].connective, "However");
  EXPECT_EQ(r[1].arg1, "Vacuum reclaims the space of dead rows");
  EXPECT_EQ(r[1].arg2, "Updates never overwrite a row in place.");
  EXPECT_EQ(r[1].senses.front(), "Contingency.Cause.Reason");
  EXPECT_EQ(r[2].connective, "even though");
  EXPECT_EQ(r[2].senses.front(), "Comparison.Concession");
  EXPECT_EQ(r[3].senses.front(), "Contingency.Condition");
  EXPECT_EQ(r[3].id, "doc:3");
}

TEST(DiscourseSilver, CorpusSplitsByDocumentWithoutSharedPairs) {
  const fs::path docs = scratch() / "docs" / "manual";
  fs::create_directories(docs / "sub");
  const std::string same = "<p>The cache holds recent pages in memory. However, it is cleared on every restart.</p>";
  for (int d = 0; d < 40; ++d) {
    std::string html = "<html><body>";
    html += fmt::format("<p>Document {} explains the first topic in detail. Therefore, readers learn topic {} "
                        "before the next one.</p>",
                        d, d);
    html += fmt::format("<p>The tool {} stops early, because the input file number {} is empty.</p>", d, d);
    html += same;  // the same pair in every document: kept once
    std::ofstream(docs / (d % 2 ? "sub" : ".") / fmt::format("page{}.html", d)) << html << "</body></html>";
  }
  std::ofstream(docs / "notes.txt") << "not html";
  SilverOptions options;
  options.docs = {docs.string()};
  options.output = (scratch() / "silver").string();
  options.dev_share = 0.2;
  options.test_share = 0.2;
  const SilverReport report = build_silver_corpus(options);
  EXPECT_EQ(report.documents, 40);
  EXPECT_EQ(report.paragraphs, 120);
  EXPECT_EQ(report.duplicates, 39);
  std::map<std::string, std::string> split_of_doc;
  std::set<std::string> pairs;
  int64_t total = 0;
  for (const std::string split : {"train", "dev", "test"}) {
    const std::vector<DiscourseRelation> relations = read_conll_relations(options.output + "/" + split + ".json");
    EXPECT_FALSE(relations.empty()) << split;
    for (const DiscourseRelation& r : relations) {
      const auto [it, fresh] = split_of_doc.emplace(r.doc_id, split);
      EXPECT_EQ(it->second, split) << r.doc_id << " is in two splits";
      EXPECT_TRUE(pairs.insert(r.arg1 + "|" + r.arg2).second) << "a pair twice";
      ++total;
    }
  }
  EXPECT_EQ(total, 81);
  EXPECT_TRUE(fs::exists(options.output + "/corpus.json"));
  // The same corpus from the command, with the folder spelled with a trailing slash.
  int code = 0;
  const fs::path again = scratch() / "silver_cli";
  const std::string log = run_command(fmt::format("{} discourse corpus --docs {}/ --output {} --dev-share 0.2 "
                                                  "--test-share 0.2 2>&1",
                                                  FOLDTRON_BINARY, docs.string(), again.string()),
                                      &code);
  ASSERT_EQ(code, 0) << log;
  EXPECT_EQ(read_text_file((again / "test.json").string(), "test"),
            read_text_file(options.output + "/test.json", "test"));
  // Errors.
  const auto expect_error = [&](SilverOptions o, const std::string& expected) {
    try {
      build_silver_corpus(o);
      ADD_FAILURE() << "no error for " << expected;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(expected), std::string::npos) << e.what();
    }
  };
  SilverOptions bad = options;
  bad.docs = {(scratch() / "nowhere").string()};
  expect_error(bad, "does not exist");
  const fs::path empty = scratch() / "empty_docs";
  fs::create_directories(empty);
  bad.docs = {empty.string()};
  expect_error(bad, "no .html files under");
  fs::create_directories(scratch() / "other" / "manual");
  std::ofstream(scratch() / "other" / "manual" / "page0.html") << "<p>x</p>";
  bad.docs = {docs.string(), (scratch() / "other" / "manual").string()};
  expect_error(bad, "two documentation folders named 'manual'");
  bad = options;
  bad.test_share = 0;
  expect_error(bad, "--test-share 0 is not in (0, 1)");
  bad = options;
  bad.dev_share = 0.9;
  expect_error(bad, "--dev-share 0.9");
  const fs::path prose_free = scratch() / "code_only";
  fs::create_directories(prose_free);
  std::ofstream(prose_free / "a.html") << "<pre>int main() { return 0; }</pre>";
  bad = options;
  bad.docs = {prose_free.string()};
  expect_error(bad, "no relation was mined from the 1 documents");
}

}  // namespace
}  // namespace foldtron::testing
