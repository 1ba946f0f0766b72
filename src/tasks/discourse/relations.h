// Discourse relations as the shallow discourse parsing corpora give them, and the CoNLL-2015/2016
// shared task's relations.json reader (one JSON object per line):
//   {"ID": 14887, "DocID": "wsj_2200", "Type": "Implicit", "Sense": ["Expansion.Conjunction"],
//    "Arg1": {"RawText": "...", ...}, "Arg2": {"RawText": "...", ...},
//    "Connective": {"RawText": "...", ...}}
// Senses are kept whole ("Contingency.Cause.Reason"); their mapping to a level is metrics.h's.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace foldtron {

struct DiscourseRelation {
  std::string id;       // the corpus's relation id, as text
  std::string doc_id;   // e.g. wsj_2200
  std::string type;     // Explicit, Implicit, AltLex, EntRel, NoRel
  std::vector<std::string> senses;  // at least one; the first is the primary sense
  std::string arg1, arg2, connective;  // raw text (the connective empty for implicit relations)
};

// Every relation of a relations.json file. DataError naming the file, the line and the field on
// a line that is not a JSON object, a missing or mistyped ID/Sense/Arg1/Arg2, an empty sense list
// (unless `senses_required` is false: blind input to classify, "Sense": [] or none) or an ID seen
// before.
std::vector<DiscourseRelation> read_conll_relations(const std::string& path, bool senses_required = true);

// Predictions, one JSON object per line: {"ID": ..., "Sense": "Expansion.Conjunction"} (a list's
// first sense is taken too, as CoNLL's own output writes it). DataError naming the file and line
// on a malformed line or an ID seen before.
std::map<std::string, std::string> read_sense_predictions(const std::string& path);

// Writes relations in the relations.json form (ID, DocID, Type, Sense, Arg1/Arg2/Connective
// RawText), atomically; read_conll_relations reads them back. Text that is not valid UTF-8 is
// written with U+FFFD in its place.
void write_conll_relations(const std::string& path, const std::vector<DiscourseRelation>& relations);

// A whole file as bytes; DataError naming `what` and the path when it cannot be read.
std::string read_text_file(const std::string& path, const std::string& what);

// Creates the folder (and its parents); DataError naming it when that fails.
void make_folder(const std::string& dir);

// The WSJ section of a PDTB document id ("wsj_2200" -> 22); -1 when the id has no such form.
int64_t wsj_section(const std::string& doc_id);

}  // namespace foldtron
