// The .mo reader: catalogs written here in both byte orders give the same messages (contexts,
// plural forms, the header's charset, language and plural rule); a Latin-1 catalog comes out as
// UTF-8; a catalog compiled by GNU msgfmt from a .po fixture reads back as written; the German
// catalogs of the system read; every kind of damage is a DataError naming the file and problem.
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "core/errors.h"
#include "run_command.h"
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
  fs::remove_all(dir);
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

}  // namespace
}  // namespace foldtron::testing
