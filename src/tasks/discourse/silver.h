// A silver corpus of discourse relations that anyone can rebuild from Debian's archive: explicit
// relations mined from English prose (HTML manuals of Debian documentation packages, the pinned
// list in configs/discourse/packages.txt), their connective removed and its sense as the label,
// so a classifier sees the two arguments alone, as in implicit relation recognition.
//   - Paragraphs: the text of each <p> element (tags removed, entities decoded, whitespace
//     collapsed); <pre> blocks and paragraphs that are not prose (under 70% letters, fewer than
//     6 words) are skipped. Sentences: the translation corpus's splitter.
//   - Between sentences: the second of two adjacent sentences of a paragraph opens with a
//     connective of the table and a comma ("However, ..."): Arg1 the first sentence, Arg2 the
//     second without the connective. Within a sentence: "A, because B", "A, although B", "A, but
//     B", ... : Arg1 A, Arg2 B. Each argument holds 4 to 60 words and balanced brackets; one
//     relation per sentence.
//   - The table maps each connective to the sense it mostly signals in PDTB 2.0; ambiguous
//     connectives (since, while, when, as, meanwhile, ...) are left out, and so is "because of".
//   - Splits by document (a hash of the seed and the document id, the --docs folder's name and
//     the path inside it: test and dev shares, the rest train); an argument pair seen before
//     anywhere is dropped, so no instance is in two splits.
// Writes OUTPUT/{train,dev,test}.json (CoNLL-2016 form, Type "Explicit", the removed connective
// in Connective.RawText), OUTPUT/train.prose.txt (every paragraph of the training documents, a line
// each: the text an encoder is pretrained on) and OUTPUT/corpus.json (options, sources, counts per
// split and class).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "tasks/discourse/relations.h"

namespace foldtron {

// The text of each <p> element of an HTML page (see above).
std::vector<std::string> html_paragraphs(const std::string& html);

// A connective of the table and the sense it signals.
struct Connective {
  std::string text;   // as written: "However" (opens a sentence), "because" (within one)
  std::string sense;  // e.g. Comparison.Contrast
  bool initial;       // opens the second sentence, followed by a comma
};
const std::vector<Connective>& connective_table();

// The relations of one document's paragraphs, ids doc_id:N.
std::vector<DiscourseRelation> mine_relations(const std::string& doc_id, const std::vector<std::string>& paragraphs);

struct SilverOptions {
  std::vector<std::string> docs;  // folders searched for *.html / *.htm
  std::string output;
  uint64_t seed = 1;
  double dev_share = 0.1, test_share = 0.1;
};

struct SilverReport {
  int64_t documents = 0, paragraphs = 0, duplicates = 0;
  std::map<std::string, std::map<std::string, int64_t>> counts;  // split -> 4-way class -> relations
};

// UsageError for shares outside their ranges; DataError for a missing or unreadable folder, two
// folders of one name, no HTML under the folders, no relation mined, or an unwritable output.
SilverReport build_silver_corpus(const SilverOptions& options);

}  // namespace foldtron
