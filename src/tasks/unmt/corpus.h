// The translation corpus: English/German/French text from two real, human-translated sources,
// cleaned and split so that no English-German alignment reaches training.
//
// Sources
//   catalogs      gettext .mo files under folders <lang>/LC_MESSAGES/ (lang de or fr) found below
//                 the given roots: each message's English msgid with its translations.
//   descriptions  Debian's translated package descriptions (Translation-en/-de/-fr, aligned by
//                 Description-md5): the short description, and the long one by paragraph, bullet
//                 and sentence where the languages split alike. The descriptions of the held-out
//                 packages, every description whose text equals one of theirs, and every segment
//                 of theirs are never used.
//
// Cleaning (clean_segment): accelerators (_ & ~) removed, markup, entities and format placeholders
// refused, whitespace collapsed, NFC; a segment must read like text (two or more words, mostly
// letters, at most max_words words). A translation equal to its English is dropped (untranslated).
// English segments are deduplicated (a catalog's German and another's French of the same English
// make one triple).
//
// Splits (each item, an English segment with its translations, lands in at most one; the items
// of one package description are a group and stay together): En-De dev and test sets per source,
// whole groups at a time (a dev/test group's items without German are used nowhere); then each
// group, by a seeded hash, goes to one pool by what it holds: with German and French, a quarter
// each of English monolingual, German monolingual, English-French parallel and English-German
// parallel (the supervised upper bound); German only, German monolingual; French only,
// English-French; English only, English monolingual. An item without the side its group's pool
// needs is left out ("group pool"). Training segments whose English or German equals a dev/test
// side, or one sentence of a dev/test side, are removed, and so are German monolingual segments equal to the German of any other
// training item (no aligned pair in any form).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace foldtron {

struct CorpusOptions {
  std::vector<std::string> catalog_roots;  // folders searched for <de|fr>/LC_MESSAGES/*.mo
  std::string descriptions;                // folder with Translation-en, Translation-de, Translation-fr
  std::string heldout_packages;            // one package name a line (# comments)
  std::string output;                      // folder the split files and corpus.json go into
  int64_t dev_pairs = 1000;                // En-De dev pairs per source
  int64_t test_pairs = 2000;               // En-De test pairs per source
  int64_t max_words = 50;
  uint64_t seed = 1;
};

struct CorpusReport {
  // Lines of each written file (by file name).
  std::map<std::string, int64_t> lines;
  // Segments dropped by the cleaning, by reason.
  std::map<std::string, int64_t> dropped;
  int64_t catalogs = 0, messages = 0, descriptions = 0, heldout_descriptions = 0;
  int64_t heldout_segments = 0;  // segments (of any source) equal to a held-out description's
  int64_t leak_removed = 0;  // training segments removed because they equal a dev/test side or aligned text
};

// The segment cleaned, or the reason it is not used ("markup", "placeholder", "words", "letters").
struct Cleaned {
  std::optional<std::string> text;
  std::string reason;
};
Cleaned clean_segment(const std::string& text, int64_t max_words);

// A seeded, platform-independent hash of `key` mapped to [0, 1): the corpus builders' splits.
double unit_hash(uint64_t seed, const std::string& key);

// Sentences of a paragraph: split after . ! ? followed by a space and an upper-case letter or a digit.
std::vector<std::string> split_sentences(const std::string& paragraph);

// Builds the corpus into options.output (see above) and writes corpus.json (options, sources,
// counts); every file is written atomically. DataError for a missing or malformed source.
CorpusReport build_corpus(const CorpusOptions& options);

}  // namespace foldtron
