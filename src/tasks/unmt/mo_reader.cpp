// GNU .mo catalogs (see mo_reader.h).
#include "tasks/unmt/mo_reader.h"

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <optional>
#include <utility>

#include <iconv.h>

#include <fmt/format.h>

#include "core/errors.h"

namespace foldtron {
namespace {

constexpr uint32_t kMagic = 0x950412de;
constexpr uint32_t kMagicSwapped = 0xde120495;
constexpr char kContextSeparator = '\x04';

uint32_t swap_bytes(uint32_t v) {
  return (v >> 24) | ((v >> 8) & 0xff00) | ((v << 8) & 0xff0000) | (v << 24);
}

class MoParser {
 public:
  MoParser(std::string_view bytes, const std::string& name) : bytes_(bytes), name_(name) {}

  MoCatalog parse() {
    if (bytes_.size() < 28) fail(fmt::format("{} bytes, shorter than the 28-byte header", bytes_.size()));
    const uint32_t magic = word_at(0, false);
    if (magic == kMagicSwapped) {
      swapped_ = true;
    } else if (magic != kMagic) {
      fail(fmt::format("wrong magic 0x{:08x} (a .mo file starts with 0x950412de in either byte order)", magic));
    }
    const uint32_t revision = word(4);
    if ((revision >> 16) > 1) fail(fmt::format("format revision {}.{}; this reader knows 0 and 1", revision >> 16,
                                               revision & 0xffff));
    const uint64_t count = word(8), originals = word(12), translations = word(16);
    for (const auto& [what, offset] : {std::pair<const char*, uint64_t>{"original strings", originals},
                                       std::pair<const char*, uint64_t>{"translations", translations}}) {
      if (offset + 8 * count > bytes_.size()) {
        fail(fmt::format("the table of {} ({} entries at byte {}) runs past the end ({} bytes)", what, count, offset,
                         bytes_.size()));
      }
    }
    MoCatalog catalog;
    catalog.charset = "UTF-8";
    std::vector<std::pair<std::string, std::string>> raw;
    for (uint64_t i = 0; i < count; ++i) {
      raw.emplace_back(string_at(originals + 8 * i, i, "original"), string_at(translations + 8 * i, i, "translation"));
    }
    for (const auto& [original, translation] : raw) {
      if (original.empty()) read_header(translation, catalog);
    }
    for (const auto& [original, translation] : raw) {
      if (original.empty()) continue;
      catalog.messages.push_back(message(original, translation, catalog.charset));
    }
    return catalog;
  }

 private:
  [[noreturn]] void fail(const std::string& problem) const {
    throw DataError(fmt::format("'{}' is not a valid .mo catalog: {}", name_, problem),
                    "use a catalog compiled by msgfmt (a Debian package's /usr/share/locale/*/LC_MESSAGES/*.mo)");
  }

  uint32_t word_at(uint64_t offset, bool swap) const {
    uint32_t v;
    std::memcpy(&v, bytes_.data() + offset, 4);
    return swap ? swap_bytes(v) : v;
  }
  uint32_t word(uint64_t offset) const { return word_at(offset, swapped_); }

  // The string the (length, offset) pair at `entry` names, checked to lie in the file with its NUL.
  std::string string_at(uint64_t entry, uint64_t index, const char* what) const {
    const uint64_t length = word(entry), offset = word(entry + 4);
    if (offset + length + 1 > bytes_.size()) {
      fail(fmt::format("{} {} ({} bytes at byte {}) runs past the end ({} bytes)", what, index, length, offset,
                       bytes_.size()));
    }
    if (bytes_[offset + length] != '\0') fail(fmt::format("{} {} does not end with a NUL", what, index));
    return std::string(bytes_.substr(offset, length));
  }

  // The header's fields: "Name: value" lines.
  static void read_header(const std::string& header, MoCatalog& catalog) {
    size_t start = 0;
    while (start < header.size()) {
      size_t end = header.find('\n', start);
      if (end == std::string::npos) end = header.size();
      const std::string line = header.substr(start, end - start);
      start = end + 1;
      const auto field = [&](const char* name) -> std::optional<std::string> {
        const size_t n = std::strlen(name);
        if (line.compare(0, n, name) != 0) return std::nullopt;
        const size_t value = line.find_first_not_of(' ', n);
        return value == std::string::npos ? std::string() : line.substr(value);
      };
      if (auto v = field("Content-Type:")) {
        const size_t at = v->find("charset=");
        if (at != std::string::npos) {
          std::string charset = v->substr(at + 8);
          charset = charset.substr(0, charset.find_first_of("; \t"));
          // gettext writes "CHARSET" in untranslated templates: their strings are ASCII.
          if (!charset.empty() && charset != "CHARSET") catalog.charset = charset;
        }
      } else if (auto language = field("Language:")) {
        catalog.language = *language;
      } else if (auto plural = field("Plural-Forms:")) {
        catalog.plural_forms = *plural;
      }
    }
  }

  std::string to_utf8(const std::string& text, const std::string& charset) const {
    if (charset == "UTF-8" || charset == "utf-8" || charset == "ASCII" || charset == "US-ASCII") return text;
    iconv_t cd = ::iconv_open("UTF-8", charset.c_str());
    if (cd == reinterpret_cast<iconv_t>(-1)) fail(fmt::format("unknown charset '{}'", charset));
    std::string out(text.size() * 4 + 4, '\0');
    char* in_ptr = const_cast<char*>(text.data());
    size_t in_left = text.size();
    char* out_ptr = out.data();
    size_t out_left = out.size();
    const size_t rc = ::iconv(cd, &in_ptr, &in_left, &out_ptr, &out_left);
    const int error = errno;
    ::iconv_close(cd);
    if (rc == static_cast<size_t>(-1)) {
      fail(fmt::format("text not in its charset '{}' ({}): '{}'", charset, std::strerror(error), text.substr(0, 40)));
    }
    out.resize(out.size() - out_left);
    return out;
  }

  MoMessage message(const std::string& original, const std::string& translation, const std::string& charset) const {
    MoMessage m;
    std::string id = original;
    const size_t separator = id.find(kContextSeparator);
    if (separator != std::string::npos) {
      m.context = to_utf8(id.substr(0, separator), charset);
      id = id.substr(separator + 1);
    }
    const size_t plural = id.find('\0');
    m.msgid = to_utf8(id.substr(0, plural), charset);
    if (plural != std::string::npos) m.msgid_plural = to_utf8(id.substr(plural + 1), charset);
    size_t start = 0;
    for (;;) {
      const size_t end = translation.find('\0', start);
      m.msgstr.push_back(to_utf8(translation.substr(start, end - start), charset));
      if (end == std::string::npos) break;
      start = end + 1;
    }
    return m;
  }

  std::string_view bytes_;
  std::string name_;
  bool swapped_ = false;
};

}  // namespace

MoCatalog parse_mo(std::string_view bytes, const std::string& name) { return MoParser(bytes, name).parse(); }

MoCatalog read_mo(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw DataError(fmt::format("cannot read the catalog '{}'", path), "check the path and its permissions");
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return parse_mo(bytes, path);
}

}  // namespace foldtron
