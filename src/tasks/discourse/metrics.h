// Evaluation of discourse relation classifiers, as the implicit relation literature reports it
// and as DESIGN.md's `foldtron discourse score` contract defines it:
//   - a sense maps to a level by its first components: 4-way keeps one (Comparison,
//     Contingency, Expansion, Temporal), 11-way two ("Contingency.Cause.Reason" ->
//     "Contingency.Cause"; a sense with fewer components stays whole);
//   - an instance may have several gold senses: its gold label is the prediction when that
//     matches any of them at the level, else its first gold sense;
//   - accuracy; per class (every class in the gold labels or the predictions) precision, recall
//     and F1 (0 where undefined); macro-F1, their mean; one-vs-rest F1 of each top-level class
//     from the same predictions, taken to the top level (with the multi-sense rule there, so it
//     is the same at either level); the confusion matrix of gold labels by predictions.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "tasks/discourse/relations.h"

namespace foldtron {

enum class SenseLevel { kFourWay, kElevenWay };

// "4way" or "11way"; UsageError naming `flag` otherwise.
SenseLevel parse_sense_level(const std::string& text, const std::string& flag);
const char* sense_level_name(SenseLevel level);

// The sense at the level: its first one (4-way) or two (11-way) dot-separated components.
std::string sense_at_level(const std::string& sense, SenseLevel level);

struct ClassScores {
  int64_t gold = 0, predicted = 0, correct = 0;
  double precision = 0, recall = 0, f1 = 0;
};

struct DiscourseScores {
  int64_t instances = 0;
  double accuracy = 0, macro_f1 = 0;
  std::map<std::string, ClassScores> per_class;  // the classes of gold labels and predictions
  std::map<std::string, double> binary_f1;       // one-vs-rest F1 per top-level class
  std::vector<std::string> classes;              // sorted: the confusion matrix's order
  std::vector<std::vector<int64_t>> confusion;   // [gold label][prediction]
};

// Scores predictions[i] (a sense, mapped to the level here) against gold[i] (the instance's
// senses, at least one, mapped here). InternalError when the sizes differ or a gold list is empty.
DiscourseScores score_senses(const std::vector<std::vector<std::string>>& gold,
                             const std::vector<std::string>& predictions, SenseLevel level);

// The relations scored by their predictions, matched by ID. DataError naming the first gold
// relation without a prediction, or the first prediction of an ID not in gold (and how many).
DiscourseScores score_relations(const std::vector<DiscourseRelation>& gold,
                                const std::map<std::string, std::string>& predictions, SenseLevel level);

}  // namespace foldtron
