// Discourse relation metrics (see metrics.h).
#include "tasks/discourse/metrics.h"

#include <algorithm>
#include <set>

#include <fmt/format.h>

#include "core/errors.h"

namespace foldtron {
namespace {

double f1_of(double precision, double recall) {
  return precision + recall > 0 ? 2 * precision * recall / (precision + recall) : 0.0;
}

double ratio(int64_t a, int64_t b) { return b > 0 ? static_cast<double>(a) / static_cast<double>(b) : 0.0; }

}  // namespace

SenseLevel parse_sense_level(const std::string& text, const std::string& flag) {
  if (text == "4way") return SenseLevel::kFourWay;
  if (text == "11way") return SenseLevel::kElevenWay;
  throw UsageError(fmt::format("{} '{}' is not a sense level", flag, text), "use 4way or 11way");
}

const char* sense_level_name(SenseLevel level) { return level == SenseLevel::kFourWay ? "4way" : "11way"; }

std::string sense_at_level(const std::string& sense, SenseLevel level) {
  const size_t first = sense.find('.');
  if (level == SenseLevel::kFourWay || first == std::string::npos) return sense.substr(0, first);
  return sense.substr(0, sense.find('.', first + 1));
}

DiscourseScores score_senses(const std::vector<std::vector<std::string>>& gold,
                             const std::vector<std::string>& predictions, SenseLevel level) {
  FT_CHECK(gold.size() == predictions.size(), "one prediction per gold instance");
  DiscourseScores out;
  out.instances = static_cast<int64_t>(gold.size());
  // The gold label of instance i at a level: the prediction when any gold sense matches it.
  const auto gold_label = [&](size_t i, const std::string& p, SenseLevel at) {
    for (const std::string& g : gold[i]) {
      if (sense_at_level(g, at) == p) return p;
    }
    return sense_at_level(gold[i].front(), at);
  };
  std::vector<std::string> labels, predicted;
  for (size_t i = 0; i < gold.size(); ++i) {
    FT_CHECK(!gold[i].empty(), "an instance without a gold sense");
    predicted.push_back(sense_at_level(predictions[i], level));
    labels.push_back(gold_label(i, predicted.back(), level));
  }
  std::set<std::string> classes(labels.begin(), labels.end());
  classes.insert(predicted.begin(), predicted.end());
  out.classes.assign(classes.begin(), classes.end());
  const auto index = [&](const std::string& c) {
    return static_cast<size_t>(std::lower_bound(out.classes.begin(), out.classes.end(), c) - out.classes.begin());
  };
  out.confusion.assign(out.classes.size(), std::vector<int64_t>(out.classes.size(), 0));
  int64_t correct = 0;
  std::map<std::string, ClassScores> top;  // one-vs-rest counts per top-level class
  for (size_t i = 0; i < labels.size(); ++i) {
    ++out.confusion[index(labels[i])][index(predicted[i])];
    ++out.per_class[labels[i]].gold;
    ++out.per_class[predicted[i]].predicted;
    const std::string predicted_top = sense_at_level(predicted[i], SenseLevel::kFourWay);
    const std::string label_top = gold_label(i, predicted_top, SenseLevel::kFourWay);
    ++top[label_top].gold;
    ++top[predicted_top].predicted;
    if (label_top == predicted_top) ++top[label_top].correct;
    if (labels[i] == predicted[i]) {
      ++correct;
      ++out.per_class[labels[i]].correct;
    }
  }
  out.accuracy = ratio(correct, out.instances);
  double f1_sum = 0;
  for (auto& [name, c] : out.per_class) {
    c.precision = ratio(c.correct, c.predicted);
    c.recall = ratio(c.correct, c.gold);
    c.f1 = f1_of(c.precision, c.recall);
    f1_sum += c.f1;
  }
  out.macro_f1 = out.per_class.empty() ? 0.0 : f1_sum / static_cast<double>(out.per_class.size());
  for (const auto& [name, c] : top) out.binary_f1[name] = f1_of(ratio(c.correct, c.predicted), ratio(c.correct, c.gold));
  return out;
}

DiscourseScores score_relations(const std::vector<DiscourseRelation>& gold,
                                const std::map<std::string, std::string>& predictions, SenseLevel level) {
  std::vector<std::vector<std::string>> senses;
  std::vector<std::string> predicted;
  std::set<std::string> ids;
  int64_t missing = 0;
  std::string first_missing;
  for (const DiscourseRelation& r : gold) {
    ids.insert(r.id);
    const auto it = predictions.find(r.id);
    if (it == predictions.end()) {
      if (missing++ == 0) first_missing = r.id;
      continue;
    }
    senses.push_back(r.senses);
    predicted.push_back(it->second);
  }
  if (missing > 0) {
    throw DataError(fmt::format("{} of the {} gold relations {} no prediction (the first: ID {})", missing,
                                gold.size(), missing == 1 ? "has" : "have", first_missing),
                    "predict every relation of the gold file, or score against the relations you predicted");
  }
  int64_t unknown = 0;
  std::string first_unknown;
  for (const auto& [id, sense] : predictions) {
    if (ids.count(id) == 0 && unknown++ == 0) first_unknown = id;
  }
  if (unknown > 0) {
    throw DataError(fmt::format("{} {} not in the gold file (the first: ID {})", unknown,
                                unknown == 1 ? "prediction has an ID" : "predictions have IDs", first_unknown),
                    "score against the gold relations the predictions were made for");
  }
  return score_senses(senses, predicted, level);
}

}  // namespace foldtron
