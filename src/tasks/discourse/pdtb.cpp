// PDTB readers and the task's instances (see pdtb.h).
#include "tasks/discourse/pdtb.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include <fmt/format.h>

#include "core/errors.h"
#include "core/text.h"

namespace foldtron {
namespace {

namespace fs = std::filesystem;

std::string trim(const std::string& text) {
  const size_t begin = text.find_first_not_of(" \t\r\n");
  if (begin == std::string::npos) return {};
  return text.substr(begin, text.find_last_not_of(" \t\r\n") - begin + 1);
}

struct CsvRecord {
  int64_t line = 0;  // where the record starts
  std::vector<std::string> fields;
};

// RFC 4180: fields split by commas, a quoted field may hold commas, newlines and "" for a quote.
std::vector<CsvRecord> parse_csv(const std::string& text, const std::string& path) {
  std::vector<CsvRecord> records;
  CsvRecord record;
  std::string field;
  bool quoted = false, in_field = false, any = false;
  int64_t line = 1;
  record.line = 1;
  const auto end_record = [&] {
    if (any || !record.fields.empty()) {
      record.fields.push_back(field);
      records.push_back(std::move(record));
    }
    record = CsvRecord{};
    record.line = line;
    field.clear();
    in_field = any = false;
  };
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (quoted) {
      if (c == '"') {
        if (i + 1 < text.size() && text[i + 1] == '"') {
          field.push_back('"');
          ++i;
        } else {
          quoted = false;
        }
      } else {
        if (c == '\n') ++line;
        field.push_back(c);
      }
      continue;
    }
    if (c == '"' && !in_field) {
      quoted = in_field = any = true;
    } else if (c == ',') {
      record.fields.push_back(field);
      field.clear();
      in_field = false;
      any = true;
    } else if (c == '\n') {
      ++line;
      end_record();
    } else if (c != '\r') {
      field.push_back(c);
      in_field = any = true;
    }
  }
  if (quoted) {
    throw DataError(fmt::format("{}:{}: a quoted field is never closed", path, record.line),
                    "check that the file is the whole CSV export (each field's quotes doubled inside)");
  }
  end_record();
  return records;
}

// The senses of a relation from its (up to four) sense fields; its type when it has none.
std::vector<std::string> senses_of(const std::vector<std::string>& fields, const std::string& type) {
  std::vector<std::string> senses;
  for (const std::string& f : fields) {
    const std::string sense = trim(f);
    if (!sense.empty()) senses.push_back(sense);
  }
  if (senses.empty()) senses.push_back(type);
  return senses;
}

std::string doc_id_of(int64_t section, int64_t file) { return fmt::format("wsj_{:02d}{:02d}", section, file); }

int64_t number_field(const std::string& text, const std::string& where) {
  size_t used = 0;
  int64_t value = -1;
  try {
    value = std::stoll(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != text.size() || value < 0) {
    throw DataError(fmt::format("{} is '{}', not a number", where, text), "check the file against the PDTB format");
  }
  return value;
}

// The text of spans "b..e;b..e" (end exclusive) joined by spaces, newlines made spaces.
std::string span_text(const std::string& spans, const std::string& text, const std::string& where) {
  std::vector<std::string> parts;
  for (const std::string& span : split(spans, ';')) {
    if (trim(span).empty()) continue;
    const size_t dots = span.find("..");
    if (dots == std::string::npos) {
      throw DataError(fmt::format("{}: span '{}' is not begin..end", where, span), "check the file against PDTB 3.0");
    }
    const int64_t begin = number_field(trim(span.substr(0, dots)), where + " span begin");
    const int64_t end = number_field(trim(span.substr(dots + 2)), where + " span end");
    if (begin > end || end > static_cast<int64_t>(text.size())) {
      throw DataError(fmt::format("{}: span {}..{} lies outside the {} characters of the raw text", where, begin, end,
                                  text.size()),
                      "pair each gold file with the raw file of the same name");
    }
    std::string part = text.substr(static_cast<size_t>(begin), static_cast<size_t>(end - begin));
    std::replace(part.begin(), part.end(), '\n', ' ');
    parts.push_back(part);
  }
  return join(parts, " ");
}

}  // namespace

std::vector<DiscourseRelation> read_pdtb2_csv(const std::string& path) {
  const std::vector<CsvRecord> records = parse_csv(read_text_file(path, "PDTB 2.0 CSV file"), path);
  if (records.empty()) throw DataError(fmt::format("'{}' is empty", path), "pass the PDTB 2.0 CSV export (pdtb2.csv)");
  std::map<std::string, size_t> column;
  for (size_t i = 0; i < records[0].fields.size(); ++i) column[trim(records[0].fields[i])] = i;
  const std::vector<std::string> needed{"Relation",          "Section",           "FileNumber",     "Connective_RawText",
                                        "Conn1",             "ConnHeadSemClass1", "ConnHeadSemClass2",
                                        "Conn2SemClass1",    "Conn2SemClass2",    "Arg1_RawText",   "Arg2_RawText"};
  for (const std::string& name : needed) {
    if (!column.count(name)) {
      throw DataError(fmt::format("'{}' has no column '{}' in its header row", path, name),
                      "pass the 57-column PDTB 2.0 CSV export, header row first");
    }
  }
  std::vector<DiscourseRelation> out;
  for (size_t r = 1; r < records.size(); ++r) {
    const CsvRecord& record = records[r];
    if (record.fields.size() != records[0].fields.size()) {
      throw DataError(fmt::format("{}:{}: {} fields where the header has {}", path, record.line, record.fields.size(),
                                  records[0].fields.size()),
                      "check the row's quoting (a field with commas or newlines must be quoted)");
    }
    const auto get = [&](const std::string& name) { return record.fields[column.at(name)]; };
    const std::string where = fmt::format("{}:{}", path, record.line);
    DiscourseRelation relation;
    relation.type = trim(get("Relation"));
    if (relation.type.empty()) throw DataError(where + ": field 'Relation' is empty", "check the row");
    const int64_t section = number_field(trim(get("Section")), where + ": field 'Section'");
    const int64_t file = number_field(trim(get("FileNumber")), where + ": field 'FileNumber'");
    relation.doc_id = doc_id_of(section, file);
    relation.id = fmt::format("{}:{}", relation.doc_id, r);
    relation.senses = senses_of({get("ConnHeadSemClass1"), get("ConnHeadSemClass2"), get("Conn2SemClass1"),
                                 get("Conn2SemClass2")},
                                relation.type);
    relation.arg1 = get("Arg1_RawText");
    relation.arg2 = get("Arg2_RawText");
    relation.connective = relation.type == "Implicit" ? get("Conn1") : get("Connective_RawText");
    out.push_back(std::move(relation));
  }
  return out;
}

std::vector<DiscourseRelation> read_pdtb3(const std::string& root) {
  const fs::path gold = fs::path(root) / "gold", raw = fs::path(root) / "raw";
  if (!fs::is_directory(gold) || !fs::is_directory(raw)) {
    throw DataError(fmt::format("'{}' has no gold/ and raw/ folders", root),
                    "pass the PDTB 3.0 data folder (gold/SS/wsj_SSNN and raw/SS/wsj_SSNN)");
  }
  std::vector<fs::path> files;
  for (const auto& entry : fs::recursive_directory_iterator(gold)) {
    if (entry.is_regular_file()) files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  std::vector<DiscourseRelation> out;
  for (const fs::path& file : files) {
    const fs::path text_path = raw / fs::relative(file, gold);
    const std::string text = read_text_file(text_path.string(), "PDTB 3.0 raw text");
    std::istringstream lines(read_text_file(file.string(), "PDTB 3.0 gold file"));
    const std::string doc = file.filename().string();
    int64_t number = 0;
    for (std::string line; std::getline(lines, line);) {
      ++number;
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (trim(line).empty()) continue;
      const std::string where = fmt::format("{}:{}", file.string(), number);
      const std::vector<std::string> f = split(line, '|');
      if (f.size() < 21) {
        throw DataError(fmt::format("{}: {} pipe-delimited fields, fewer than the 21 of a relation", where, f.size()),
                        "pass PDTB 3.0 gold files (one relation per line)");
      }
      DiscourseRelation relation;
      relation.type = trim(f[0]);
      if (relation.type.empty()) throw DataError(where + ": field 1 (the relation type) is empty", "check the line");
      relation.doc_id = doc;
      relation.id = fmt::format("{}:{}", doc, number);
      relation.senses = senses_of({f[8], f[9], f[11], f[12]}, relation.type);
      relation.arg1 = span_text(f[14], text, where + ": Arg1");
      relation.arg2 = span_text(f[20], text, where + ": Arg2");
      relation.connective = relation.type == "Implicit" ? trim(f[7]) : span_text(f[1], text, where + ": connective");
      out.push_back(std::move(relation));
    }
  }
  if (out.empty()) throw DataError(fmt::format("no relations under '{}'", gold.string()), "check the folder");
  return out;
}

SplitPreset parse_split_preset(const std::string& text, const std::string& flag) {
  if (text == "ji") return SplitPreset::kJi;
  if (text == "lin") return SplitPreset::kLin;
  throw UsageError(fmt::format("{} '{}' is not a split preset", flag, text),
                   "use ji (sections 2-20 / 0-1 / 21-22) or lin (2-21 / 22 / 23)");
}

std::string split_of(int64_t section, SplitPreset preset) {
  if (preset == SplitPreset::kJi) {
    if (section >= 2 && section <= 20) return "train";
    if (section == 0 || section == 1) return "dev";
    if (section == 21 || section == 22) return "test";
    return "";
  }
  if (section >= 2 && section <= 21) return "train";
  if (section == 22) return "dev";
  if (section == 23) return "test";
  return "";
}

const std::vector<std::string>& eleven_way_types() {
  static const std::vector<std::string> types{
      "Comparison.Concession",  "Comparison.Contrast",     "Contingency.Cause",     "Contingency.Pragmatic cause",
      "Expansion.Alternative",  "Expansion.Conjunction",   "Expansion.Instantiation", "Expansion.List",
      "Expansion.Restatement", "Temporal.Asynchronous",   "Temporal.Synchrony"};
  return types;
}

std::vector<DiscourseInstance> discourse_instances(const std::vector<DiscourseRelation>& relations,
                                                   const std::vector<std::string>& types, SenseLevel level,
                                                   bool duplicate) {
  const std::vector<std::string>& eleven = eleven_way_types();
  std::vector<DiscourseInstance> out;
  for (const DiscourseRelation& r : relations) {
    if (std::find(types.begin(), types.end(), r.type) == types.end()) continue;
    DiscourseInstance instance{r.id, r.arg1, r.arg2, {}, r.connective};
    for (const std::string& sense : r.senses) {
      const std::string label = sense_at_level(sense, level);
      if (level == SenseLevel::kElevenWay && std::find(eleven.begin(), eleven.end(), label) == eleven.end()) continue;
      if (std::find(instance.labels.begin(), instance.labels.end(), label) == instance.labels.end()) {
        instance.labels.push_back(label);
      }
    }
    if (instance.labels.empty()) continue;
    if (!duplicate) {
      out.push_back(std::move(instance));
      continue;
    }
    for (const std::string& label : instance.labels) out.push_back({instance.id, instance.arg1, instance.arg2, {label}, instance.connective});
  }
  return out;
}

}  // namespace foldtron
