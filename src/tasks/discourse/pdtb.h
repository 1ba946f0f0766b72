// Readers of the Penn Discourse Treebank in the forms users have, and the implicit relation
// task's instances. PDTB is licensed: the project tests these on fixtures of its own in the same
// formats; users point them at their copy.
//   PDTB 2.0  the 57-column CSV export (pdtb2.csv: a header row, then one relation per row,
//             RFC 4180 quoting; columns found by their header names: Relation, Section,
//             FileNumber, Connective_RawText, Conn1, Conn2, ConnHeadSemClass1/2,
//             Conn2SemClass1/2, Arg1_RawText, Arg2_RawText). Relation ids: wsj_SSNN:ROW.
//   PDTB 3.0  ROOT/gold/SS/wsj_SSNN, pipe-delimited, one relation per line (field 1 the type, 8
//             and 11 the connectives, 9-10 and 12-13 their senses, 15 and 21 the arguments'
//             spans "begin..end[;begin..end]", end exclusive), with the text in
//             ROOT/raw/SS/wsj_SSNN. Relation ids: wsj_SSNN:LINE.
// Relations without a sense (EntRel, NoRel) get their type as the sense, as CoNLL writes them.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "tasks/discourse/metrics.h"
#include "tasks/discourse/relations.h"

namespace foldtron {

// DataError naming the file, the record (row or line) and the field on malformed input.
std::vector<DiscourseRelation> read_pdtb2_csv(const std::string& path);
std::vector<DiscourseRelation> read_pdtb3(const std::string& root);

// Section presets: Ji (train 2-20, dev 0-1, test 21-22) and Lin (train 2-21, dev 22, test 23).
enum class SplitPreset { kJi, kLin };
// "ji" or "lin"; UsageError naming `flag` otherwise.
SplitPreset parse_split_preset(const std::string& text, const std::string& flag);
// "train", "dev", "test", or "" for a section the preset leaves out.
std::string split_of(int64_t section, SplitPreset preset);

// The 11 level-2 types of implicit relation recognition on PDTB 2.0 (Lin et al. 2009; the five
// rarest types, Condition, Pragmatic condition, Pragmatic contrast, Pragmatic concession and
// Exception, are excluded).
const std::vector<std::string>& eleven_way_types();

// One classification instance: the arguments and its labels at the level (the first the
// primary; a second sense adds a label), a training copy per label where `duplicate` is set.
struct DiscourseInstance {
  std::string id, arg1, arg2;
  std::vector<std::string> labels;
  std::string connective;  // the implicit connective annotated (or the one removed); may be empty
};

// The relations of `types` (e.g. {"Implicit"}) as instances at `level`: senses mapped, repeated
// labels dropped, at 11-way only the eleven types kept (an instance left without one is
// excluded). With `duplicate`, an instance of two labels becomes two instances of one (training);
// without, it keeps both (evaluation: a prediction of either is right).
std::vector<DiscourseInstance> discourse_instances(const std::vector<DiscourseRelation>& relations,
                                                   const std::vector<std::string>& types, SenseLevel level,
                                                   bool duplicate);

}  // namespace foldtron
