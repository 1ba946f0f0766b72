// GNU gettext message catalogs (.mo), the source of human-translated English/German/French text
// for the translation recipe: every message of a program's interface in English (msgid) and in
// the catalog's language (msgstr). Read by our own code (no libintl): both byte orders, format
// revisions 0 and 1 (revision 1's system-dependent strings are skipped), message contexts
// (msgctxt), plural forms, and the header's charset (non-UTF-8 catalogs are converted with iconv).
//
// Layout (all integers 32-bit in the file's byte order):
//   magic 0x950412de | revision | N | offset of the original strings' table | offset of the
//   translations' table | hash size | hash offset; each table holds N (length, offset) pairs of
//   NUL-terminated strings. An original is "context\x04msgid" with a context, and
//   "msgid\0msgid_plural" with plurals; a plural translation holds its forms separated by NULs.
//   The entry with the empty msgid is the header ("Content-Type: text/plain; charset=UTF-8\n...").
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace foldtron {

struct MoMessage {
  std::string context;                // msgctxt, or empty
  std::string msgid;                  // the English source
  std::string msgid_plural;           // empty without plural forms
  std::vector<std::string> msgstr;    // the translation (one per plural form), UTF-8
};

struct MoCatalog {
  std::string charset;       // as the header names it ("UTF-8" when it names none)
  std::string language;      // the header's Language field, when it has one
  std::string plural_forms;  // the header's Plural-Forms field, when it has one
  std::vector<MoMessage> messages;  // in the file's order, the header left out
};

// The catalog in `bytes`; `name` is used in messages. DataError naming the problem (bad magic,
// unknown revision, a table or string past the end of the file, a string without its NUL, text
// that cannot be converted from the charset) and the hint to use a catalog made by msgfmt.
MoCatalog parse_mo(std::string_view bytes, const std::string& name);
// The same for a file; DataError naming it when it cannot be read.
MoCatalog read_mo(const std::string& path);

}  // namespace foldtron
