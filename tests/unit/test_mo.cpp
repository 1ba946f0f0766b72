// The .mo reader: catalogs written here in both byte orders give the same messages (contexts,
// plural forms, the header's charset, language and plural rule); a Latin-1 catalog comes out as
// UTF-8; a catalog compiled by GNU msgfmt from a .po fixture reads back as written; the German
// catalogs of the system read; every kind of damage is a DataError naming the file and problem.
// The corpus builder on catalogs and package descriptions written here: the cleaning rules, the
// sentence splitter, held-out descriptions used nowhere, dev/test sides nowhere in training,
// disjoint training pools, and its errors.
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "core/errors.h"
#include "core/files.h"
#include "run_command.h"
#include "tasks/unmt/corpus.h"
#include "tasks/unmt/mo_reader.h"

namespace foldtron::testing {
namespace {
namespace fs = std::filesystem;

// A catalog of (original, translation) pairs in the .mo layout, big- or little-endian.
std::string write_mo(const std::vector<std::pair<std::string, std::string>>& entries, bool big_endian,
                     uint32_t revision = 0) {
  std::string out;
  const auto put = [&](uint32_t v) {
    for (int i = 0; i < 4; ++i) {
      const int shift = big_endian ? 8 * (3 - i) : 8 * i;
      out.push_back(static_cast<char>((v >> shift) & 0xff));
    }
  };
  const uint32_t n = static_cast<uint32_t>(entries.size());
  const uint32_t originals = 28, translations = originals + 8 * n, strings = translations + 8 * n;
  put(0x950412de);
  put(revision);
  put(n);
  put(originals);
  put(translations);
  put(0);
  put(0);
  uint32_t offset = strings;
  std::string data;
  std::vector<std::pair<uint32_t, uint32_t>> original_pairs, translation_pairs;
  for (const auto& [original, translation] : entries) {
    original_pairs.emplace_back(static_cast<uint32_t>(original.size()), offset);
    data += original + '\0';
    offset += static_cast<uint32_t>(original.size() + 1);
  }
  for (const auto& [original, translation] : entries) {
    translation_pairs.emplace_back(static_cast<uint32_t>(translation.size()), offset);
    data += translation + '\0';
    offset += static_cast<uint32_t>(translation.size() + 1);
  }
  for (const auto& [length, at] : original_pairs) {
    put(length);
    put(at);
  }
  for (const auto& [length, at] : translation_pairs) {
    put(length);
    put(at);
  }
  return out + data;
}

const std::vector<std::pair<std::string, std::string>> kEntries{
    {"", "Project-Id-Version: demo 1.0\nLanguage: de\nContent-Type: text/plain; charset=UTF-8\n"
         "Plural-Forms: nplurals=2; plural=(n != 1);\n"},
    {"Open", "Öffnen"},
    {std::string("menu") + '\x04' + "File", "Datei"},
    {std::string("%d file") + '\0' + "%d files", std::string("%d Datei") + '\0' + "%d Dateien"},
};

void expect_demo_catalog(const MoCatalog& c) {
  EXPECT_EQ(c.charset, "UTF-8");
  EXPECT_EQ(c.language, "de");
  EXPECT_EQ(c.plural_forms, "nplurals=2; plural=(n != 1);");
  ASSERT_EQ(c.messages.size(), 3u);
  EXPECT_EQ(c.messages[0].msgid, "Open");
  EXPECT_EQ(c.messages[0].msgstr, std::vector<std::string>{"Öffnen"});
  EXPECT_EQ(c.messages[1].context, "menu");
  EXPECT_EQ(c.messages[1].msgid, "File");
  EXPECT_EQ(c.messages[1].msgstr, std::vector<std::string>{"Datei"});
  EXPECT_EQ(c.messages[2].msgid, "%d file");
  EXPECT_EQ(c.messages[2].msgid_plural, "%d files");
  EXPECT_EQ(c.messages[2].msgstr, (std::vector<std::string>{"%d Datei", "%d Dateien"}));
}

void expect_error(const std::string& bytes, const std::vector<std::string>& words) {
  try {
    parse_mo(bytes, "fixture.mo");
    ADD_FAILURE() << "no DataError";
  } catch (const DataError& e) {
    const std::string text = std::string(e.what()) + " | " + e.hint();
    for (const std::string& w : words) EXPECT_NE(text.find(w), std::string::npos) << text;
  }
}

TEST(MoReader, BothByteOrdersContextsAndPlurals) {
  expect_demo_catalog(parse_mo(write_mo(kEntries, false), "little.mo"));
  expect_demo_catalog(parse_mo(write_mo(kEntries, true), "big.mo"));
  expect_demo_catalog(parse_mo(write_mo(kEntries, true, 1u << 16), "revision1.mo"));
}

TEST(MoReader, ConvertsTheHeadersCharsetToUtf8) {
  const MoCatalog c = parse_mo(
      write_mo({{"", "Content-Type: text/plain; charset=ISO-8859-1\n"}, {"Greeting", "Gr\xfc\xdf" "e"}}, false),
      "latin1.mo");
  EXPECT_EQ(c.charset, "ISO-8859-1");
  EXPECT_EQ(c.messages.at(0).msgstr.at(0), "Grüße");
}

TEST(MoReader, ReadsWhatMsgfmtCompiles) {
  if (::access("/usr/bin/msgfmt", X_OK) != 0) GTEST_SKIP() << "msgfmt is not installed (Debian package gettext)";
  const fs::path dir = fs::temp_directory_path() / fmt::format("foldtron_mo_{}", ::getpid());
  fs::create_directories(dir);
  std::ofstream(dir / "de.po") << "msgid \"\"\nmsgstr \"\"\n\"Content-Type: text/plain; charset=UTF-8\\n\"\n"
                                   "\"Language: de\\n\"\n\"Plural-Forms: nplurals=2; plural=(n != 1);\\n\"\n\n"
                                   "msgid \"Open\"\nmsgstr \"Öffnen\"\n\n"
                                   "msgctxt \"menu\"\nmsgid \"File\"\nmsgstr \"Datei\"\n\n"
                                   "msgid \"%d file\"\nmsgid_plural \"%d files\"\nmsgstr[0] \"%d Datei\"\n"
                                   "msgstr[1] \"%d Dateien\"\n";
  int code = -1;
  const std::string log = run_command(fmt::format("msgfmt -o {} {} 2>&1", (dir / "de.mo").string(),
                                                  (dir / "de.po").string()),
                                      &code);
  ASSERT_EQ(code, 0) << log;
  const MoCatalog c = read_mo((dir / "de.mo").string());
  ASSERT_EQ(c.messages.size(), 3u);  // in msgfmt's order (sorted by original)
  int found = 0;
  for (const MoMessage& m : c.messages) {
    if (m.msgid == "Open") {
      EXPECT_EQ(m.msgstr, std::vector<std::string>{"Öffnen"});
      ++found;
    } else if (m.msgid == "File") {
      EXPECT_EQ(m.context, "menu");
      EXPECT_EQ(m.msgstr, std::vector<std::string>{"Datei"});
      ++found;
    } else if (m.msgid == "%d file") {
      EXPECT_EQ(m.msgid_plural, "%d files");
      EXPECT_EQ(m.msgstr, (std::vector<std::string>{"%d Datei", "%d Dateien"}));
      ++found;
    }
  }
  EXPECT_EQ(found, 3);
  EXPECT_EQ(c.language, "de");
  remove_tree(dir);
}

TEST(MoReader, ReadsTheSystemsGermanCatalogs) {
  const fs::path dir = "/usr/share/locale/de/LC_MESSAGES";
  if (!fs::exists(dir)) GTEST_SKIP() << dir << " does not exist";
  int catalogs = 0;
  size_t messages = 0;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.path().extension() != ".mo") continue;
    const MoCatalog c = read_mo(entry.path().string());
    messages += c.messages.size();
    ++catalogs;
  }
  EXPECT_GT(catalogs, 0);
  EXPECT_GT(messages, 100u);
  std::cout << catalogs << " catalogs, " << messages << " messages in " << dir << "\n";
}

TEST(MoReader, DamageIsADataErrorNamingTheProblem) {
  const std::string good = write_mo(kEntries, false);
  expect_error(good.substr(0, 20), {"'fixture.mo' is not a valid .mo catalog", "20 bytes, shorter than the 28-byte header",
                                    "msgfmt"});
  std::string bad = good;
  bad[0] = 'X';
  expect_error(bad, {"wrong magic"});
  expect_error(write_mo(kEntries, false, 2u << 16), {"format revision 2.0"});
  expect_error(good.substr(0, 40), {"the table of original strings (4 entries at byte 28) runs past the end"});
  bad = good;
  for (int i = 0; i < 3; ++i) bad[28 + 8 + 4 + i] = static_cast<char>(0xff);  // the second original's offset
  expect_error(bad, {"original 1", "runs past the end"});
  bad = good;
  bad[bad.size() - 1] = 'x';  // the last translation's NUL
  expect_error(bad, {"translation 3 does not end with a NUL"});
  expect_error(write_mo({{"", "Content-Type: text/plain; charset=NO-SUCH-CHARSET\n"}, {"a", "b"}}, false),
               {"unknown charset 'NO-SUCH-CHARSET'"});
  EXPECT_THROW(read_mo("/nonexistent/de.mo"), DataError);
}

TEST(UnmtCorpus, CleaningRules) {
  const auto clean = [](const std::string& text) { return clean_segment(text, 8); };
  EXPECT_EQ(clean("Save _As").text.value_or("?"), "Save As");
  EXPECT_EQ(clean("Open &Recent   Files\n").text.value_or("?"), "Open Recent Files");
  EXPECT_EQ(clean("Insert ~Special Character").text.value_or("?"), "Insert Special Character");
  EXPECT_EQ(clean("Cafe\u0301 au lait").text.value_or("?"), "Caf\u00e9 au lait");  // NFC
  EXPECT_EQ(clean("&File").reason, "words");
  EXPECT_EQ(clean("one two three four five six seven eight nine").reason, "words");
  EXPECT_EQ(clean("Cannot open %s for reading").reason, "placeholder");
  EXPECT_EQ(clean("Deleted %1 items").reason, "placeholder");
  EXPECT_EQ(clean("Welcome to %PRODUCTNAME Writer").reason, "placeholder");
  EXPECT_EQ(clean("Remove {0} files").reason, "placeholder");
  EXPECT_EQ(clean("<b>Bold</b> text here").reason, "markup");
  EXPECT_EQ(clean("Tom &amp; Jerry show").reason, "markup");
  EXPECT_EQ(clean("0x00 0x01 0x02 ab cd").reason, "letters");
}

TEST(UnmtCorpus, SplitsSentences) {
  EXPECT_EQ(split_sentences("It reads files. It writes them!  Does it? Yes"),
            (std::vector<std::string>{"It reads files.", "It writes them!", "Does it?", "Yes"}));
  EXPECT_EQ(split_sentences("Tools, e. g. Foo and z. B. Bar. Am 1. Januar"),
            (std::vector<std::string>{"Tools, e. g. Foo and z. B. Bar.", "Am 1. Januar"}));
  EXPECT_EQ(split_sentences("version 2.0 is out. 3 bugs fixed"),
            (std::vector<std::string>{"version 2.0 is out.", "3 bugs fixed"}));
}

std::vector<std::string> lines_of(const fs::path& path) {
  std::ifstream in(path);
  std::vector<std::string> out;
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

struct CorpusFixture {
  fs::path dir = fs::temp_directory_path() / fmt::format("foldtron_corpus_{}", ::getpid());
  CorpusOptions options;

  CorpusFixture() {
    remove_tree(dir);
    const std::vector<std::string> words{"red", "green", "blue", "small", "large", "quick"};
    std::vector<std::pair<std::string, std::string>> de{{"", "Content-Type: text/plain; charset=UTF-8\n"}}, fr = de;
    // 120 messages: English "Message N says red green", German "Nachricht N sagt ...", French "Le message N ...".
    for (int i = 0; i < 120; ++i) {
      const std::string tail = words[i % 6] + " " + words[(i / 6) % 6];
      de.emplace_back(fmt::format("Message {} says {}", i, tail), fmt::format("Nachricht {} sagt {}", i, tail));
      if (i % 3 != 0) fr.emplace_back(fmt::format("Message {} says {}", i, tail), fmt::format("Le message {} dit {}", i, tail));
    }
    de.emplace_back("Cannot open %s now", "Kann %s jetzt nicht öffnen");
    de.emplace_back("Held out words here.", "Zurückgehaltene Worte hier.");  // equals a held-out description
    for (const auto& [lang, entries] : {std::pair{"de", &de}, std::pair{"fr", &fr}}) {
      fs::create_directories(dir / "catalogs" / lang / "LC_MESSAGES");
      std::ofstream(dir / "catalogs" / lang / "LC_MESSAGES" / "demo.mo", std::ios::binary) << write_mo(*entries, false);
    }
    // Descriptions: 40 packages; pkg-secret is held out, pkg-copy has its text.
    fs::create_directories(dir / "ddtp");
    std::ofstream en(dir / "ddtp" / "Translation-en"), ge(dir / "ddtp" / "Translation-de"),
        fre(dir / "ddtp" / "Translation-fr");
    const auto entry = [](std::ostream& out, const std::string& package, const std::string& md5,
                          const std::string& lang, const std::string& text) {
      out << "Package: " << package << "\nDescription-md5: " << md5 << "\nDescription-" << lang << ": " << text
          << "\n\n";
    };
    for (int i = 0; i < 40; ++i) {
      const std::string md5 = fmt::format("{:032x}", i);
      entry(en, fmt::format("pkg{}", i), md5, "en",
            fmt::format("tool number {} for files\n This tool counts {} apples.\n It sorts them too.", i, i));
      entry(ge, fmt::format("pkg{}", i), md5, "de",
            fmt::format("Werkzeug Nummer {} für Dateien\n Dieses Werkzeug zählt {} Äpfel.\n Es sortiert sie auch.", i, i));
      entry(fre, fmt::format("pkg{}", i), md5, "fr", fmt::format("outil numéro {} pour fichiers", i));
    }
    entry(en, "pkg-secret", "ffff", "en", "secret tool here\n Held out words here.");
    entry(ge, "pkg-secret", "ffff", "de", "geheimes Werkzeug hier\n Zurückgehaltene Worte hier.");
    entry(en, "pkg-copy", "eeee", "en", "secret tool here\n Held out words here.");
    std::ofstream(dir / "heldout.txt") << "# held out\npkg-secret\n";
    options.catalog_roots = {(dir / "catalogs").string()};
    options.descriptions = (dir / "ddtp").string();
    options.heldout_packages = (dir / "heldout.txt").string();
    options.output = (dir / "out").string();
    options.dev_pairs = 5;
    options.test_pairs = 10;
  }
  ~CorpusFixture() { remove_tree(dir); }
};

TEST(UnmtCorpus, SplitsWithoutLeakageAndHeldOutDescriptions) {
  CorpusFixture f;
  const CorpusReport report = build_corpus(f.options);
  const fs::path out = f.options.output;
  std::map<std::string, std::vector<std::string>> files;
  for (const auto& [name, count] : report.lines) {
    files[name] = lines_of(out / name);
    EXPECT_EQ(static_cast<int64_t>(files[name].size()), count) << name;
  }
  EXPECT_TRUE(fs::exists(out / "corpus.json"));
  EXPECT_EQ(report.descriptions, 42);
  EXPECT_EQ(report.heldout_descriptions, 2);  // pkg-secret, and pkg-copy with its text
  EXPECT_EQ(report.heldout_segments, 1);      // the catalog's copy of a held-out sentence
  EXPECT_EQ(report.dropped.at("placeholder"), 1);
  // Nothing of the held-out description anywhere.
  for (const auto& [name, lines] : files) {
    for (const std::string& line : lines) {
      EXPECT_EQ(line.find("Held out"), std::string::npos) << name;
      EXPECT_EQ(line.find("Zurückgehaltene"), std::string::npos) << name;
      EXPECT_EQ(line.find("secret"), std::string::npos) << name;
    }
  }
  for (const std::string source : {"catalogs", "descriptions"}) {
    EXPECT_EQ(files["test." + source + ".en"].size(), files["test." + source + ".de"].size());
    EXPECT_GE(files["test." + source + ".en"].size(), 10u) << source;
    EXPECT_GE(files["dev." + source + ".en"].size(), 5u) << source;
  }
  // Dev and test sides appear in no training file.
  std::set<std::string> eval;
  for (const auto& [name, lines] : files) {
    if (name.rfind("train.", 0) != 0) eval.insert(lines.begin(), lines.end());
  }
  for (const auto& [name, lines] : files) {
    if (name.rfind("train.", 0) != 0) continue;
    for (const std::string& line : lines) EXPECT_EQ(eval.count(line), 0u) << name << ": " << line;
  }
  // The English of the three English-bearing pools is disjoint, and no German monolingual line is
  // the German of an English line in training ("Message N" <-> "Nachricht N" by number).
  std::set<std::string> english;
  size_t total = 0;
  for (const std::string name : {"train.en", "train.en-fr.en", "train.en-de.en"}) {
    english.insert(files[name].begin(), files[name].end());
    total += files[name].size();
  }
  EXPECT_EQ(english.size(), total);
  for (const std::string& de : files["train.de"]) {
    if (de.rfind("Nachricht ", 0) != 0) continue;
    std::istringstream in(de.substr(10));
    int number = -1;
    in >> number;
    for (const std::string& en : english) EXPECT_NE(en.rfind(fmt::format("Message {} ", number), 0), 0u) << de;
  }
  EXPECT_FALSE(files["train.de"].empty());
  EXPECT_FALSE(files["train.en-fr.fr"].empty());
  EXPECT_FALSE(files["train.en-de.de"].empty());
}

TEST(UnmtCorpus, ErrorsNameTheProblem) {
  CorpusFixture f;
  CorpusOptions options = f.options;
  options.test_pairs = 1000;
  try {
    build_corpus(options);
    ADD_FAILURE() << "no DataError";
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find("for dev and test sets of 5 and 1000"), std::string::npos) << e.what();
  }
  options = f.options;
  options.catalog_roots = {"/nonexistent/catalogs"};
  EXPECT_THROW(build_corpus(options), DataError);
  options = f.options;
  options.descriptions = "/nonexistent/ddtp";
  EXPECT_THROW(build_corpus(options), DataError);
}

}  // namespace
}  // namespace foldtron::testing
