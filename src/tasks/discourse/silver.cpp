// The silver corpus of explicit relations (see silver.h).
#include "tasks/discourse/silver.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/errors.h"
#include "core/files.h"
#include "core/log.h"
#include "core/text.h"
#include "tasks/discourse/metrics.h"
#include "tasks/unmt/corpus.h"
#include "tasks/utf8.h"

namespace foldtron {
namespace {

namespace fs = std::filesystem;

bool starts_with_ci(const std::string& text, size_t at, const std::string& prefix) {
  if (text.size() < at + prefix.size()) return false;
  for (size_t i = 0; i < prefix.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(text[at + i])) != std::tolower(static_cast<unsigned char>(prefix[i]))) {
      return false;
    }
  }
  return true;
}

// Whether the tag starting at html[at] ('<') separates words: a line break or a block.
bool separates_words(const std::string& html, size_t at) {
  size_t name = at + 1;
  if (name < html.size() && html[name] == '/') ++name;
  for (const char* tag : {"br", "li", "td", "th", "tr", "dd", "dt", "div", "h1", "h2", "h3", "h4", "h5", "h6"}) {
    const size_t n = std::char_traits<char>::length(tag);
    if (starts_with_ci(html, name, tag) && name + n < html.size() &&
        (html[name + n] == '>' || html[name + n] == ' ' || html[name + n] == '/')) {
      return true;
    }
  }
  return false;
}

// Tags removed (line breaks and blocks become a space; inline tags such as <a> or <code> sit
// inside sentences), entities decoded, whitespace collapsed.
std::string strip_markup(const std::string& html) {
  static const std::map<std::string, uint32_t> kEntities{
      {"amp", '&'},      {"lt", '<'},       {"gt", '>'},       {"quot", '"'},     {"apos", '\''},
      {"nbsp", ' '},     {"mdash", 0x2014}, {"ndash", 0x2013}, {"hellip", 0x2026}, {"rsquo", 0x2019},
      {"lsquo", 0x2018}, {"rdquo", 0x201D}, {"ldquo", 0x201C}, {"copy", 0xA9},    {"reg", 0xAE},
      {"trade", 0x2122}};
  std::string out;
  for (size_t i = 0; i < html.size(); ++i) {
    const char c = html[i];
    if (c == '<') {
      const size_t close = html.find('>', i);
      if (close == std::string::npos) break;
      if (separates_words(html, i)) out.push_back(' ');
      i = close;
      continue;
    }
    if (c == '&') {
      const size_t semi = html.find(';', i);
      if (semi != std::string::npos && semi - i <= 10) {
        const std::string name = html.substr(i + 1, semi - i - 1);
        uint32_t code = 0;
        if (!name.empty() && name[0] == '#') {
          try {
            code = static_cast<uint32_t>(name.size() > 1 && (name[1] == 'x' || name[1] == 'X')
                                             ? std::stoul(name.substr(2), nullptr, 16)
                                             : std::stoul(name.substr(1)));
          } catch (const std::exception&) {
            code = 0;
          }
        } else if (kEntities.count(name)) {
          code = kEntities.at(name);
        }
        // A surrogate or a code past U+10FFFF has no UTF-8: the reference stays as written.
        if (code > 0 && !(code >= 0xD800 && code <= 0xDFFF) && code < 0x110000) {
          append_utf8(out, code == 0xA0 ? ' ' : code);
          i = semi;
          continue;
        }
      }
    }
    out.push_back(c);
  }
  std::string collapsed;
  bool space = true;
  for (const char c : out) {
    if (std::isspace(static_cast<unsigned char>(c))) {
      if (!space) collapsed.push_back(' ');
      space = true;
    } else {
      collapsed.push_back(c);
      space = false;
    }
  }
  while (!collapsed.empty() && collapsed.back() == ' ') collapsed.pop_back();
  return collapsed;
}

int64_t word_count(const std::string& text) {
  int64_t words = 0;
  bool in_word = false;
  for (const char c : text) {
    const bool space = c == ' ';
    if (!space && !in_word) ++words;
    in_word = !space;
  }
  return words;
}

bool is_prose(const std::string& text) {
  int64_t letters = 0, other = 0;
  for (const char c : text) {
    if (c == ' ') continue;
    if (std::isalpha(static_cast<unsigned char>(c)) || static_cast<unsigned char>(c) >= 0x80) {
      ++letters;
    } else {
      ++other;
    }
  }
  return word_count(text) >= 6 && letters >= 0.7 * static_cast<double>(letters + other);
}

// 4 to 60 words, and no bracket left open or closed: a connective inside a parenthesis does not
// join the clauses around it.
bool good_argument(const std::string& text) {
  const int64_t words = word_count(text);
  int64_t depth = 0;
  for (const char c : text) {
    depth += c == '(' || c == '[';
    depth -= c == ')' || c == ']';
    if (depth < 0) return false;
  }
  return depth == 0 && words >= 4 && words <= 60;
}

std::string capitalized(std::string text) {
  if (!text.empty()) text[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(text[0])));
  return text;
}

std::string strip_spaces_and_commas(const std::string& text) {
  const size_t begin = text.find_first_not_of(" ,");
  if (begin == std::string::npos) return {};
  return text.substr(begin, text.find_last_not_of(" ,") - begin + 1);
}

}  // namespace

std::vector<std::string> html_paragraphs(const std::string& html) {
  std::vector<std::string> out;
  size_t at = 0;
  while (true) {
    // The next paragraph, past any preformatted block (code, not prose).
    size_t open = std::string::npos;
    for (size_t i = html.find('<', at); i != std::string::npos; i = html.find('<', i + 1)) {
      if (starts_with_ci(html, i, "<pre")) {
        size_t end = html.find('<', i + 1);
        while (end != std::string::npos && !starts_with_ci(html, end, "</pre")) end = html.find('<', end + 1);
        if (end == std::string::npos) return out;
        i = end;
        continue;
      }
      if (starts_with_ci(html, i, "<p") && i + 2 < html.size() && (html[i + 2] == '>' || html[i + 2] == ' ')) {
        open = i;
        break;
      }
    }
    if (open == std::string::npos) return out;
    const size_t content = html.find('>', open);
    if (content == std::string::npos) return out;
    // The paragraph ends at </p>, or where another paragraph or block starts.
    size_t end = std::string::npos;
    for (const char* stop : {"</p", "<p>", "<p ", "<div", "</div", "<pre", "</li", "</td", "</body"}) {
      for (size_t i = html.find('<', content); i != std::string::npos && i < end; i = html.find('<', i + 1)) {
        if (starts_with_ci(html, i, stop)) {
          end = std::min(end, i);
          break;
        }
      }
    }
    if (end == std::string::npos) end = html.size();
    const std::string text = strip_markup(html.substr(content + 1, end - content - 1));
    if (is_prose(text)) out.push_back(text);
    at = end;
  }
}

const std::vector<Connective>& connective_table() {
  static const std::vector<Connective> table = [] {
    std::vector<Connective> t;
    const auto add = [&](std::initializer_list<const char*> words, const char* sense, bool initial) {
      for (const char* w : words) t.push_back({w, sense, initial});
    };
    add({"However", "In contrast", "By contrast", "On the other hand", "Conversely"}, "Comparison.Contrast", true);
    add({"Nevertheless", "Nonetheless"}, "Comparison.Concession", true);
    add({"Therefore", "Thus", "Consequently", "As a result", "Hence", "Accordingly"}, "Contingency.Cause.Result",
        true);
    add({"For example", "For instance"}, "Expansion.Instantiation", true);
    add({"In addition", "Moreover", "Furthermore", "Additionally", "Also", "Similarly", "Likewise"},
        "Expansion.Conjunction", true);
    add({"In other words", "That is", "In particular", "Specifically"}, "Expansion.Restatement", true);
    add({"Instead", "Alternatively", "Otherwise"}, "Expansion.Alternative", true);
    add({"Then", "Afterwards", "Subsequently", "Later"}, "Temporal.Asynchronous.Precedence", true);
    add({"Previously", "Earlier", "Before that"}, "Temporal.Asynchronous.Succession", true);
    add({"Simultaneously"}, "Temporal.Synchrony", true);
    add({"because"}, "Contingency.Cause.Reason", false);
    add({"so that"}, "Contingency.Cause.Result", false);
    add({"although", "though", "even though"}, "Comparison.Concession", false);
    add({"but", "whereas"}, "Comparison.Contrast", false);
    add({"unless"}, "Contingency.Condition", false);
    return t;
  }();
  return table;
}

std::vector<DiscourseRelation> mine_relations(const std::string& doc_id, const std::vector<std::string>& paragraphs) {
  std::vector<DiscourseRelation> out;
  const auto add = [&](const std::string& arg1, const std::string& arg2, const Connective& c) {
    DiscourseRelation r;
    r.id = fmt::format("{}:{}", doc_id, out.size());
    r.doc_id = doc_id;
    r.type = "Explicit";
    r.senses = {c.sense};
    r.arg1 = arg1;
    r.arg2 = arg2;
    r.connective = c.text;
    out.push_back(std::move(r));
  };
  for (const std::string& paragraph : paragraphs) {
    const std::vector<std::string> sentences = split_sentences(paragraph);
    for (size_t s = 0; s < sentences.size(); ++s) {
      const std::string& sentence = sentences[s];
      bool found = false;
      if (s > 0) {  // between sentences: "However, ..."
        for (const Connective& c : connective_table()) {
          if (!c.initial || sentence.compare(0, c.text.size(), c.text) != 0 || sentence.size() <= c.text.size() ||
              sentence[c.text.size()] != ',') {
            continue;
          }
          const std::string arg2 = capitalized(strip_spaces_and_commas(sentence.substr(c.text.size() + 1)));
          if (good_argument(sentences[s - 1]) && good_argument(arg2)) {
            add(sentences[s - 1], arg2, c);
            found = true;
          }
          break;
        }
      }
      if (found) continue;
      // Within the sentence: "A, because B" (a comma before the connective, or "because" alone).
      size_t best = std::string::npos;
      const Connective* chosen = nullptr;
      for (const Connective& c : connective_table()) {
        if (c.initial) continue;
        for (const std::string& pattern : {", " + c.text + " ", c.text == "because" ? " because " : std::string()}) {
          if (pattern.empty()) continue;
          const size_t at = sentence.find(pattern);
          if (at != std::string::npos && at < best) {
            best = at;
            chosen = &c;
          }
        }
      }
      // "because of" is a preposition, not a connective between clauses.
      if (chosen == nullptr || sentence.compare(sentence.find(chosen->text, best), 11, "because of ") == 0) continue;
      const size_t after = sentence.find(chosen->text + " ", best) + chosen->text.size() + 1;
      const std::string arg1 = strip_spaces_and_commas(sentence.substr(0, best));
      const std::string arg2 = capitalized(strip_spaces_and_commas(sentence.substr(after)));
      if (good_argument(arg1) && good_argument(arg2)) add(arg1, arg2, *chosen);
    }
  }
  return out;
}

SilverReport build_silver_corpus(const SilverOptions& options) {
  if (options.output.empty()) throw UsageError("the corpus needs an output folder", "pass --output DIR");
  if (!(options.test_share > 0 && options.test_share < 1)) {
    throw UsageError(fmt::format("--test-share {} is not in (0, 1)", options.test_share), "use e.g. 0.1");
  }
  if (!(options.dev_share >= 0 && options.dev_share + options.test_share < 1)) {
    throw UsageError(fmt::format("--dev-share {} is not in [0, 1 - test share {})", options.dev_share,
                                 options.test_share),
                     "use e.g. 0.1, leaving documents for training");
  }
  // Documents by id: the folder's name, then the path inside it (however --docs is spelled).
  std::map<std::string, fs::path> documents;
  for (const std::string& root_text : options.docs) {
    fs::path root = fs::path(root_text).lexically_normal();
    if (root.filename().empty()) root = root.parent_path();
    if (!fs::is_directory(root)) {
      throw DataError(fmt::format("the documentation folder '{}' does not exist", root_text),
                      "unpack the packages of configs/discourse/packages.txt (scripts/discourse_corpus.sh)");
    }
    try {
      for (const auto& entry : fs::recursive_directory_iterator(root)) {
        const std::string ext = entry.path().extension().string();
        if (!entry.is_regular_file() || (ext != ".html" && ext != ".htm")) continue;
        const std::string id = (root.filename() / fs::relative(entry.path(), root)).string();
        if (!documents.emplace(id, entry.path()).second) {
          throw DataError(fmt::format("two documentation folders named '{}' hold '{}'", root.filename().string(), id),
                          "give each --docs folder its own name");
        }
      }
    } catch (const fs::filesystem_error& e) {
      throw DataError(fmt::format("cannot list '{}': {}", root_text, e.code().message()), "check its permissions");
    }
  }
  if (documents.empty()) {
    throw DataError(fmt::format("no .html files under {}", join(options.docs, ", ")),
                    "pass the unpacked usr/share/doc folders of the documentation packages");
  }
  SilverReport report;
  std::map<std::string, std::vector<DiscourseRelation>> splits{{"train", {}}, {"dev", {}}, {"test", {}}};
  std::set<std::string> seen;
  std::string prose;  // the training documents' paragraphs, a line each
  for (const auto& [id, path] : documents) {
    const std::vector<std::string> paragraphs = html_paragraphs(read_text_file(path.string(), "HTML page"));
    ++report.documents;
    report.paragraphs += static_cast<int64_t>(paragraphs.size());
    const double u = unit_hash(options.seed, id);
    const std::string split = u < options.test_share                      ? "test"
                              : u < options.test_share + options.dev_share ? "dev"
                                                                           : "train";
    if (split == "train") {
      for (const std::string& p : paragraphs) prose += p + "\n";
    }
    for (DiscourseRelation& r : mine_relations(id, paragraphs)) {
      if (!seen.insert(r.arg1 + "\n" + r.arg2).second) {
        ++report.duplicates;
        continue;
      }
      ++report.counts[split][sense_at_level(r.senses.front(), SenseLevel::kFourWay)];
      splits[split].push_back(std::move(r));
    }
  }
  int64_t total = 0;
  for (const auto& [split, relations] : splits) total += static_cast<int64_t>(relations.size());
  if (total == 0) {
    throw DataError(fmt::format("no relation was mined from the {} documents", report.documents),
                    "pass HTML manuals with English prose (configs/discourse/packages.txt)");
  }
  make_folder(options.output);
  for (const auto& [split, relations] : splits) {
    write_conll_relations((fs::path(options.output) / (split + ".json")).string(), relations);
  }
  write_file_atomically((fs::path(options.output) / "train.prose.txt").string(), prose);
  const nlohmann::ordered_json summary{{"seed", options.seed},
                                       {"dev_share", options.dev_share},
                                       {"test_share", options.test_share},
                                       {"sources", options.docs},
                                       {"documents", report.documents},
                                       {"paragraphs", report.paragraphs},
                                       {"duplicates_dropped", report.duplicates},
                                       {"relations_4way", report.counts}};
  write_file_atomically((fs::path(options.output) / "corpus.json").string(),
                        summary.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
  log::info("discourse", "{} documents, {} paragraphs: {} relations ({} duplicates dropped) in {}", report.documents,
            report.paragraphs, total, report.duplicates, options.output);
  return report;
}

}  // namespace foldtron
