// The translation corpus builder (see corpus.h).
#include "tasks/unmt/corpus.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <unordered_map>
#include <unordered_set>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#if FOLDTRON_HAVE_ICU
#include <unicode/normalizer2.h>
#include <unicode/unistr.h>
#endif

#include "core/checksum.h"
#include "core/errors.h"
#include "core/files.h"
#include "core/log.h"
#include "tasks/unmt/mo_reader.h"

namespace foldtron {
namespace {

namespace fs = std::filesystem;

std::string nfc(const std::string& text) {
#if FOLDTRON_HAVE_ICU
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* normalizer = icu::Normalizer2::getNFCInstance(status);
  if (U_FAILURE(status)) throw InternalError("ICU has no NFC normalizer");
  icu::UnicodeString normalized = normalizer->normalize(icu::UnicodeString::fromUTF8(text), status);
  if (U_FAILURE(status)) return text;
  std::string out;
  normalized.toUTF8String(out);
  return out;
#else
  (void)text;
  throw UsageError("this foldtron was built without ICU, which the corpus builder needs for Unicode normalization",
                   "install libicu-dev (scripts/setup.sh does) and rebuild");
#endif
}

// Removes a single accelerator mark (GTK _, Qt/KDE &, LibreOffice ~) before a letter or digit.
std::string strip_accelerator(std::string text) {
  for (const char mark : {'_', '&', '~'}) {
    const size_t at = text.find(mark);
    if (at == std::string::npos || text.find(mark, at + 1) != std::string::npos || at + 1 >= text.size()) continue;
    const unsigned char next = static_cast<unsigned char>(text[at + 1]);
    if (std::isalnum(next) || next >= 0x80) text.erase(at, 1);
  }
  return text;
}

std::string collapse_whitespace(const std::string& text) {
  std::string out;
  bool space = false;
  for (const char c : text) {
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
      space = !out.empty();
    } else {
      if (space) out += ' ';
      space = false;
      out += c;
    }
  }
  return out;
}

struct Item {
  std::string en, de, fr;
  std::string group;  // items of one group land in one split
  bool description = false;
};

// The items by English text, merging translations from several sources (the first one wins).
class ItemTable {
 public:
  void add(const std::string& en, const std::string& de, const std::string& fr, const std::string& group,
           bool description) {
    auto [it, inserted] = index_.try_emplace(en, items_.size());
    if (inserted) {
      items_.push_back({en, de, fr, group, description});
      return;
    }
    Item& item = items_[it->second];
    if (item.de.empty()) item.de = de;
    if (item.fr.empty()) item.fr = fr;
  }
  std::vector<Item>& items() { return items_; }

 private:
  std::unordered_map<std::string, size_t> index_;
  std::vector<Item> items_;
};

class Cleaner {
 public:
  Cleaner(int64_t max_words, CorpusReport& report) : max_words_(max_words), report_(report) {}
  // The cleaned text, or "" (counting the reason).
  std::string operator()(const std::string& text) {
    Cleaned c = clean_segment(text, max_words_);
    if (!c.text) {
      ++report_.dropped[c.reason];
      return {};
    }
    return *c.text;
  }

 private:
  int64_t max_words_;
  CorpusReport& report_;
};

// ---- catalogs ----

void read_catalogs(const CorpusOptions& options, ItemTable& table, CorpusReport& report) {
  std::vector<std::pair<std::string, std::string>> files;  // (path, language)
  for (const std::string& root : options.catalog_roots) {
    if (!fs::is_directory(root)) {
      throw DataError(fmt::format("the catalog folder '{}' does not exist", root),
                      "pass a folder holding <lang>/LC_MESSAGES/*.mo (scripts/unmt_corpus.sh unpacks the packages)");
    }
    for (const auto& entry : fs::recursive_directory_iterator(root)) {
      const fs::path& path = entry.path();
      if (!entry.is_regular_file() || path.extension() != ".mo") continue;
      if (path.parent_path().filename() != "LC_MESSAGES") continue;
      const std::string language = path.parent_path().parent_path().filename().string();
      if (language == "de" || language == "fr") files.emplace_back(path.string(), language);
    }
  }
  std::sort(files.begin(), files.end());
  if (files.empty()) {
    throw DataError(fmt::format("no de or fr catalogs under {}", fmt::join(options.catalog_roots, ", ")),
                    "pass the folder the packages were unpacked into");
  }
  Cleaner clean(options.max_words, report);
  for (const auto& [path, language] : files) {
    const MoCatalog catalog = read_mo(path);
    ++report.catalogs;
    for (const MoMessage& message : catalog.messages) {
      if (message.msgstr.empty() || message.msgstr[0].empty()) continue;
      ++report.messages;
      const std::string en = clean(message.msgid);
      if (en.empty()) continue;
      const std::string translation = clean(message.msgstr[0]);
      if (translation.empty()) continue;
      if (translation == en) {
        ++report.dropped["untranslated"];
        continue;
      }
      const bool de = language == "de";
      table.add(en, de ? translation : "", de ? "" : translation, "mo:" + en, false);
    }
  }
}

// ---- package descriptions ----

struct Description {
  std::set<std::string> packages;
  std::string text;  // as written (short line, then the long text's lines)
};

// md5 -> description of one Translation-<lang> file.
std::map<std::string, Description> read_translation(const std::string& path, const std::string& language) {
  std::ifstream in(path);
  if (!in) {
    throw DataError(fmt::format("cannot read '{}'", path),
                    "fetch the descriptions with scripts/unmt_corpus.sh (apt-get update with "
                    "Acquire::Languages=en,de,fr into a lists folder of its own)");
  }
  const std::string field = "Description-" + language + ": ";
  std::map<std::string, Description> out;
  std::string package, md5, text;
  bool in_text = false;
  int64_t line_number = 0;
  const auto finish = [&]() {
    if (!md5.empty() && !text.empty()) {
      Description& d = out[md5];
      d.packages.insert(package);
      if (d.text.empty()) d.text = text;
    }
    package.clear();
    md5.clear();
    text.clear();
    in_text = false;
  };
  for (std::string line; std::getline(in, line);) {
    ++line_number;
    if (line.empty()) {
      finish();
    } else if (line[0] == ' ') {
      if (!in_text) {
        throw DataError(fmt::format("{}:{}: a continuation line outside a description", path, line_number),
                        "pass the Translation file as apt fetched it (decompressed)");
      }
      text += "\n" + line;
    } else if (line.rfind("Package: ", 0) == 0) {
      package = line.substr(9);
      in_text = false;
    } else if (line.rfind("Description-md5: ", 0) == 0) {
      md5 = line.substr(17);
      in_text = false;
    } else if (line.rfind(field, 0) == 0) {
      text = line.substr(field.size());
      in_text = true;
    } else {
      in_text = false;
    }
  }
  finish();
  if (out.empty()) {
    throw DataError(fmt::format("'{}' holds no {} descriptions", path, language),
                    fmt::format("pass Translation-{} as apt fetched it (decompressed)", language));
  }
  return out;
}

// A description as blocks: the short description, then each paragraph's bullets or paragraph.
std::vector<std::string> description_blocks(const std::string& text) {
  std::vector<std::string> blocks;
  std::istringstream in(text);
  std::string line;
  std::getline(in, line);
  blocks.push_back(line);
  std::string block;
  const auto flush = [&]() {
    if (!block.empty()) blocks.push_back(collapse_whitespace(block));
    block.clear();
  };
  while (std::getline(in, line)) {
    const std::string body = line.size() > 1 ? line.substr(1) : std::string();
    if (body == ".") {
      flush();
      continue;
    }
    const size_t start = body.find_first_not_of(' ');
    if (start == std::string::npos) continue;
    const std::string rest = body.substr(start);
    if (rest.size() > 2 && (rest[0] == '*' || rest[0] == '-' || rest[0] == '+' || rest[0] == 'o') && rest[1] == ' ') {
      flush();
      block = rest.substr(2);
      continue;
    }
    block += (block.empty() ? "" : " ") + rest;
  }
  flush();
  return blocks;
}

// Aligned (English, other) segments of one description: blocks in order when both have as many,
// and within a block its sentences when both have as many (else the block whole); else the short
// descriptions only.
std::vector<std::pair<std::string, std::string>> align_description(const std::string& en, const std::string& other) {
  const std::vector<std::string> a = description_blocks(en), b = description_blocks(other);
  std::vector<std::pair<std::string, std::string>> out;
  if (a.size() != b.size()) {
    out.emplace_back(a[0], b[0]);
    return out;
  }
  for (size_t i = 0; i < a.size(); ++i) {
    const std::vector<std::string> sa = split_sentences(a[i]), sb = split_sentences(b[i]);
    if (sa.size() == sb.size()) {
      for (size_t j = 0; j < sa.size(); ++j) out.emplace_back(sa[j], sb[j]);
    } else {
      out.emplace_back(a[i], b[i]);
    }
  }
  return out;
}

std::set<std::string> read_heldout(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw DataError(fmt::format("cannot read the held-out package list '{}'", path), "check the path");
  std::set<std::string> out;
  for (std::string line; std::getline(in, line);) {
    line = collapse_whitespace(line);
    if (!line.empty() && line[0] != '#') out.insert(line);
  }
  return out;
}

// The segments of the held-out descriptions (every language), cleaned, which nothing may use.
void read_descriptions(const CorpusOptions& options, ItemTable& table, std::unordered_set<std::string>& heldout_text,
                       CorpusReport& report) {
  const std::set<std::string> heldout = read_heldout(options.heldout_packages);
  std::map<std::string, std::map<std::string, Description>> by_language;
  for (const std::string language : {"en", "de", "fr"}) {
    by_language[language] = read_translation((fs::path(options.descriptions) / ("Translation-" + language)).string(),
                                             language);
  }
  // Held out: the descriptions of the listed packages (by md5, in any language), and every
  // description whose text equals one of theirs.
  std::set<std::string> heldout_md5;
  std::unordered_set<std::string> heldout_descriptions;
  for (const auto& [language, descriptions] : by_language) {
    for (const auto& [md5, d] : descriptions) {
      for (const std::string& package : d.packages) {
        if (heldout.count(package) != 0) heldout_md5.insert(md5);
      }
    }
  }
  for (const auto& [language, descriptions] : by_language) {
    for (const std::string& md5 : heldout_md5) {
      auto it = descriptions.find(md5);
      if (it == descriptions.end()) continue;
      heldout_descriptions.insert(it->second.text);
      for (const std::string& block : description_blocks(it->second.text)) {
        std::vector<std::string> pieces = split_sentences(block);
        pieces.push_back(collapse_whitespace(block));
        for (const std::string& piece : pieces) {
          heldout_text.insert(piece);
          const Cleaned c = clean_segment(piece, std::numeric_limits<int64_t>::max());
          if (c.text) heldout_text.insert(*c.text);
        }
      }
    }
  }
  heldout_text.erase("");
  Cleaner clean(options.max_words, report);
  for (const auto& [md5, en] : by_language["en"]) {
    ++report.descriptions;
    if (heldout_md5.count(md5) != 0 || heldout_descriptions.count(en.text) != 0) {
      ++report.heldout_descriptions;
      continue;
    }
    std::map<std::string, std::pair<std::string, std::string>> segments;  // en -> (de, fr)
    std::vector<std::string> order;
    for (const std::string language : {"de", "fr"}) {
      auto it = by_language[language].find(md5);
      if (it == by_language[language].end() || heldout_descriptions.count(it->second.text) != 0) continue;
      for (const auto& [source, target] : align_description(en.text, it->second.text)) {
        const std::string e = clean(source);
        if (e.empty()) continue;
        const std::string t = clean(target);
        if (t.empty() || t == e) continue;
        auto [entry, inserted] = segments.try_emplace(e);
        if (inserted) order.push_back(e);
        (language == std::string("de") ? entry->second.first : entry->second.second) = t;
      }
    }
    // English sentences without a translation still serve as English monolingual text.
    for (const std::string& block : description_blocks(en.text)) {
      for (const std::string& sentence : split_sentences(block)) {
        const std::string e = clean(sentence);
        if (!e.empty() && segments.try_emplace(e).second) order.push_back(e);
      }
    }
    for (const std::string& e : order) {
      const auto& [de, fr] = segments[e];
      table.add(e, de, fr, "ddtp:" + md5, true);
    }
  }
}

// ---- splits ----

struct Splits {
  std::vector<const Item*> en_mono, de_mono, en_fr, en_de;
  std::map<std::string, std::vector<const Item*>> dev, test;  // by source: catalogs, descriptions
};

// Dev and test pairs of one source: whole groups in hash order until each set is full.
void take_dev_test(std::vector<Item*>& candidates, const CorpusOptions& options, const std::string& source,
                   Splits& splits, std::unordered_set<const Item*>& used) {
  std::map<std::string, std::vector<Item*>> groups;
  for (Item* item : candidates) groups[item->group].push_back(item);
  std::vector<std::pair<double, std::string>> order;
  for (const auto& [group, items] : groups) order.emplace_back(unit_hash(options.seed, "eval:" + group), group);
  std::sort(order.begin(), order.end());
  std::vector<const Item*>& test = splits.test[source];
  std::vector<const Item*>& dev = splits.dev[source];
  for (const auto& [hash, group] : order) {
    std::vector<const Item*>* target = nullptr;
    if (static_cast<int64_t>(test.size()) < options.test_pairs) {
      target = &test;
    } else if (static_cast<int64_t>(dev.size()) < options.dev_pairs) {
      target = &dev;
    } else {
      break;
    }
    for (Item* item : groups[group]) {
      target->push_back(item);
      used.insert(item);
    }
  }
  if (static_cast<int64_t>(dev.size()) < options.dev_pairs) {
    throw DataError(fmt::format("only {} English-German pairs from the {} for dev and test sets of {} and {}",
                                test.size() + dev.size(), source, options.dev_pairs, options.test_pairs),
                    "add catalogs or descriptions, or lower --dev-pairs/--test-pairs");
  }
}

Splits make_splits(std::vector<Item>& items, const CorpusOptions& options, CorpusReport& report) {
  Splits splits;
  std::unordered_set<const Item*> used;
  for (const bool description : {false, true}) {
    std::vector<Item*> candidates;
    for (Item& item : items) {
      if (item.description == description && !item.de.empty()) candidates.push_back(&item);
    }
    take_dev_test(candidates, options, description ? "descriptions" : "catalogs", splits, used);
  }
  // Every item of a dev/test group stays out of training, those without German too.
  std::unordered_set<std::string> eval_groups;
  std::unordered_set<std::string> eval_en, eval_de;
  for (const auto* sets : {&splits.dev, &splits.test}) {
    for (const auto& [source, list] : *sets) {
      for (const Item* item : list) {
        eval_groups.insert(item->group);
        // The sides, and each sentence of a side that holds several.
        eval_en.insert(item->en);
        eval_de.insert(item->de);
        for (const std::string& sentence : split_sentences(item->en)) eval_en.insert(sentence);
        for (const std::string& sentence : split_sentences(item->de)) eval_de.insert(sentence);
      }
    }
  }
  // One pool per group (a description's items together), by what the group holds: with German
  // and French, a quarter each of En mono, De mono, En-Fr and En-De; German only, De mono; French
  // only, En-Fr; else En mono. An item without the side its group's pool needs is left out.
  std::map<std::string, std::pair<bool, bool>> holds;  // group -> (has German, has French)
  for (const Item& item : items) {
    auto& [de, fr] = holds[item.group];
    de = de || !item.de.empty();
    fr = fr || !item.fr.empty();
  }
  for (const Item& item : items) {
    if (used.count(&item) != 0 || eval_groups.count(item.group) != 0) continue;
    if (eval_en.count(item.en) != 0 || (!item.de.empty() && eval_de.count(item.de) != 0)) {
      ++report.leak_removed;
      continue;
    }
    const auto [de, fr] = holds.at(item.group);
    std::vector<const Item*>* pool = &splits.en_mono;
    if (de && fr) {
      const double u = unit_hash(options.seed, "pool:" + item.group);
      pool = u < 0.25 ? &splits.en_mono : u < 0.5 ? &splits.de_mono : u < 0.75 ? &splits.en_fr : &splits.en_de;
    } else if (de) {
      pool = &splits.de_mono;
    } else if (fr) {
      pool = &splits.en_fr;
    }
    const bool needs_de = pool == &splits.de_mono || pool == &splits.en_de, needs_fr = pool == &splits.en_fr;
    if ((needs_de && item.de.empty()) || (needs_fr && item.fr.empty())) {
      ++report.dropped["group pool"];
      continue;
    }
    pool->push_back(&item);
  }
  // German monolingual text must not be the German of any English the training sees.
  std::unordered_set<std::string> other_de;
  for (const auto* pool : {&splits.en_mono, &splits.en_fr, &splits.en_de}) {
    for (const Item* item : *pool) {
      if (!item->de.empty()) other_de.insert(item->de);
    }
  }
  std::vector<const Item*> kept;
  for (const Item* item : splits.de_mono) {
    if (other_de.count(item->de) != 0) {
      ++report.leak_removed;
    } else {
      kept.push_back(item);
    }
  }
  splits.de_mono = std::move(kept);
  return splits;
}

void write_lines(const std::string& dir, const std::string& name, const std::vector<const Item*>& items,
                 std::string Item::*side, CorpusReport& report) {
  std::string text;
  for (const Item* item : items) text += item->*side + "\n";
  write_file_atomically((fs::path(dir) / name).string(), text);
  report.lines[name] = static_cast<int64_t>(items.size());
}

}  // namespace

Cleaned clean_segment(const std::string& raw, int64_t max_words) {
  static const std::regex markup(R"(<[A-Za-z/!?][^>]*>|&[A-Za-z]+;|&#[0-9]+;)");
  static const std::regex placeholder(
      R"(%[-+ #0-9.*]*(hh|h|ll|l|L|z|j|t)?[diouxXeEfFgGaAcspn%]|%[0-9]+|%[A-Za-z_]+%|%[A-Z][A-Z_]+|\{[0-9A-Za-z_]*\}|\$\{|\$\(|\$[0-9A-Za-z_]+)");
  if (std::regex_search(raw, markup)) return {std::nullopt, "markup"};
  if (std::regex_search(raw, placeholder)) return {std::nullopt, "placeholder"};
  std::string text = nfc(collapse_whitespace(strip_accelerator(raw)));
  int64_t words = 0, letters = 0, visible = 0;
  bool in_word = false, word_has_letter = false;
  for (size_t i = 0; i <= text.size(); ++i) {
    const unsigned char c = i < text.size() ? static_cast<unsigned char>(text[i]) : ' ';
    if (c == ' ') {
      if (in_word && word_has_letter) ++words;
      in_word = word_has_letter = false;
      continue;
    }
    in_word = true;
    if ((c & 0xc0) == 0x80) continue;  // a UTF-8 continuation byte: counted with its lead byte
    ++visible;
    if (std::isalpha(c) || c >= 0xc0) {
      ++letters;
      word_has_letter = true;
    }
  }
  if (words < 2 || words > max_words) return {std::nullopt, "words"};
  if (letters * 10 < visible * 7) return {std::nullopt, "letters"};
  return {text, ""};
}

double unit_hash(uint64_t seed, const std::string& key) {
  Checksum sum;
  sum.update(&seed, sizeof(seed));
  sum.update(key.data(), key.size());
  return static_cast<double>(sum.value() >> 11) / static_cast<double>(uint64_t{1} << 53);
}

std::vector<std::string> split_sentences(const std::string& paragraph) {
  std::vector<std::string> out;
  const std::string text = collapse_whitespace(paragraph);
  size_t start = 0;
  for (size_t i = 0; i + 2 < text.size(); ++i) {
    const char c = text[i];
    if ((c != '.' && c != '!' && c != '?') || text[i + 1] != ' ') continue;
    const unsigned char next = static_cast<unsigned char>(text[i + 2]);
    if (!(std::isupper(next) || std::isdigit(next))) continue;
    // Not after a one-letter abbreviation ("e. g.", "z. B.") or a number ("1. Januar").
    if (i >= 1 && (i < 2 || text[i - 2] == ' ') && std::isalnum(static_cast<unsigned char>(text[i - 1]))) continue;
    out.push_back(text.substr(start, i + 1 - start));
    start = i + 2;
  }
  if (start < text.size()) out.push_back(text.substr(start));
  return out;
}

CorpusReport build_corpus(const CorpusOptions& options) {
  if (options.output.empty()) throw UsageError("the corpus needs an output folder", "pass --output DIR");
  CorpusReport report;
  ItemTable table;
  std::unordered_set<std::string> heldout_text;
  read_catalogs(options, table, report);
  log::info("unmt", "catalogs: {} files, {} messages", report.catalogs, report.messages);
  read_descriptions(options, table, heldout_text, report);
  log::info("unmt", "descriptions: {} English, {} held out", report.descriptions, report.heldout_descriptions);
  // No segment of a held-out description is used, whichever source it comes from.
  std::vector<Item>& items = table.items();
  const size_t before = items.size();
  items.erase(std::remove_if(items.begin(), items.end(),
                             [&](const Item& item) {
                               return heldout_text.count(item.en) != 0 || heldout_text.count(item.de) != 0 ||
                                      heldout_text.count(item.fr) != 0;
                             }),
              items.end());
  report.heldout_segments = static_cast<int64_t>(before - items.size());
  Splits splits = make_splits(items, options, report);

  fs::create_directories(options.output);
  const std::string& dir = options.output;
  write_lines(dir, "train.en", splits.en_mono, &Item::en, report);
  write_lines(dir, "train.de", splits.de_mono, &Item::de, report);
  write_lines(dir, "train.en-fr.en", splits.en_fr, &Item::en, report);
  write_lines(dir, "train.en-fr.fr", splits.en_fr, &Item::fr, report);
  write_lines(dir, "train.en-de.en", splits.en_de, &Item::en, report);
  write_lines(dir, "train.en-de.de", splits.en_de, &Item::de, report);
  for (const auto& [name, sets] : {std::pair{"dev", &splits.dev}, std::pair{"test", &splits.test}}) {
    for (const auto& [source, list] : *sets) {
      write_lines(dir, fmt::format("{}.{}.en", name, source), list, &Item::en, report);
      write_lines(dir, fmt::format("{}.{}.de", name, source), list, &Item::de, report);
    }
  }
  nlohmann::ordered_json j;
  j["catalog_roots"] = options.catalog_roots;
  j["descriptions"] = options.descriptions;
  j["heldout_packages"] = options.heldout_packages;
  j["seed"] = options.seed;
  j["max_words"] = options.max_words;
  j["catalogs"] = report.catalogs;
  j["messages"] = report.messages;
  j["descriptions_en"] = report.descriptions;
  j["descriptions_heldout"] = report.heldout_descriptions;
  j["dropped"] = report.dropped;
  j["heldout_segments"] = report.heldout_segments;
  j["leak_removed"] = report.leak_removed;
  j["lines"] = report.lines;
  write_file_atomically((fs::path(dir) / "corpus.json").string(), j.dump(2) + "\n");
  return report;
}

}  // namespace foldtron
