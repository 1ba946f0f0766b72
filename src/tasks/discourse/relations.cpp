// The CoNLL relations.json reader (see relations.h).
#include "tasks/discourse/relations.h"

#include <cctype>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <utility>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/errors.h"
#include "core/files.h"

namespace foldtron {
namespace {

using nlohmann::json;

// A relation's id as text: CoNLL writes integers, other tools strings.
std::string id_text(const json& value) {
  if (value.is_number_integer()) return std::to_string(value.get<int64_t>());
  if (value.is_string() && !value.get<std::string>().empty()) return value.get<std::string>();
  return {};
}

// Calls `each(object, fail)` for every non-blank line of a JSON-lines file; `fail(problem)` makes
// the DataError naming the file and line, with `hint`.
template <typename F>
void for_each_json_line(const std::string& path, const std::string& what, const std::string& hint, F each) {
  std::ifstream in(path);
  if (!in) throw DataError(fmt::format("cannot read the {} '{}'", what, path), "check the path");
  int64_t number = 0;
  for (std::string line; std::getline(in, line);) {
    ++number;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const auto fail = [&](const std::string& problem) {
      return DataError(fmt::format("{}:{}: {}", path, number, problem), hint);
    };
    json j;
    try {
      j = json::parse(line);
    } catch (const json::exception& e) {  // parse_error, or out_of_range for a number beyond double
      throw fail(fmt::format("not JSON ({})", e.what()));
    }
    if (!j.is_object()) throw fail("not a JSON object");
    each(j, fail);
  }
}

}  // namespace

std::vector<DiscourseRelation> read_conll_relations(const std::string& path, bool senses_required) {
  std::vector<DiscourseRelation> out;
  std::set<std::string> seen;
  const std::string hint = "write one CoNLL-2016 relation per line: {\"ID\", \"DocID\", \"Type\", \"Sense\": [...], "
                           "\"Arg1\": {\"RawText\"}, \"Arg2\": {\"RawText\"}}";
  for_each_json_line(path, "relations file", hint, [&](const json& j, const auto& fail) {
    DiscourseRelation r;
    r.id = j.contains("ID") ? id_text(j.at("ID")) : "";
    if (r.id.empty()) throw fail("field 'ID' is missing or not an integer or a non-empty string");
    if (!seen.insert(r.id).second) throw fail(fmt::format("relation ID {} appears twice", r.id));
    const bool has_senses = j.contains("Sense") && j.at("Sense").is_array() && !j.at("Sense").empty();
    if (senses_required && !has_senses) {
      throw fail(fmt::format("relation {}: field 'Sense' is missing or not a non-empty list", r.id));
    }
    if (j.contains("Sense") && !j.at("Sense").is_array()) {
      throw fail(fmt::format("relation {}: field 'Sense' is not a list", r.id));
    }
    for (const json& sense : has_senses ? j.at("Sense") : json::array()) {
      if (!sense.is_string() || sense.get<std::string>().empty()) {
        throw fail(fmt::format("relation {}: field 'Sense' holds something other than a sense name", r.id));
      }
      r.senses.push_back(sense.get<std::string>());
    }
    const auto raw_text = [&](const char* key, bool required) -> std::string {
      if (!j.contains(key)) {
        if (required) throw fail(fmt::format("relation {}: field '{}' is missing", r.id, key));
        return {};
      }
      const json& span = j.at(key);
      if (!span.is_object() || (span.contains("RawText") && !span.at("RawText").is_string())) {
        throw fail(fmt::format("relation {}: field '{}' is not an object with a string RawText", r.id, key));
      }
      return span.value("RawText", std::string());
    };
    r.arg1 = raw_text("Arg1", true);
    r.arg2 = raw_text("Arg2", true);
    r.connective = raw_text("Connective", false);
    if (j.contains("DocID") && j.at("DocID").is_string()) r.doc_id = j.at("DocID").get<std::string>();
    if (j.contains("Type") && j.at("Type").is_string()) r.type = j.at("Type").get<std::string>();
    out.push_back(std::move(r));
  });
  return out;
}

std::map<std::string, std::string> read_sense_predictions(const std::string& path) {
  std::map<std::string, std::string> out;
  const std::string hint = "write one prediction per line: {\"ID\": 14887, \"Sense\": \"Expansion.Conjunction\"}";
  for_each_json_line(path, "predictions file", hint, [&](const json& j, const auto& fail) {
    const std::string id = j.contains("ID") ? id_text(j.at("ID")) : "";
    if (id.empty()) throw fail("field 'ID' is missing or not an integer or a non-empty string");
    json sense = j.contains("Sense") ? j.at("Sense") : json();
    if (sense.is_array() && !sense.empty()) sense = sense.front();
    if (!sense.is_string() || sense.get<std::string>().empty()) {
      throw fail(fmt::format("prediction {}: field 'Sense' is missing or not a sense name", id));
    }
    if (!out.emplace(id, sense.get<std::string>()).second) throw fail(fmt::format("a second prediction for ID {}", id));
  });
  return out;
}

void write_conll_relations(const std::string& path, const std::vector<DiscourseRelation>& relations) {
  std::string text;
  for (const DiscourseRelation& r : relations) {
    text += nlohmann::ordered_json{{"ID", r.id},
                                   {"DocID", r.doc_id},
                                   {"Type", r.type},
                                   {"Sense", r.senses},
                                   {"Arg1", {{"RawText", r.arg1}}},
                                   {"Arg2", {{"RawText", r.arg2}}},
                                   {"Connective", {{"RawText", r.connective}}}}
                .dump(-1, ' ', false, json::error_handler_t::replace) +
            "\n";
  }
  write_file_atomically(path, text);
}

std::string read_text_file(const std::string& path, const std::string& what) {
  std::optional<std::string> text = read_whole_file(path);
  if (!text) throw DataError(fmt::format("cannot read the {} '{}'", what, path), "check the path and its permissions");
  return std::move(*text);
}

void make_folder(const std::string& dir) {
  try {
    std::filesystem::create_directories(dir);
  } catch (const std::filesystem::filesystem_error& e) {
    throw DataError(fmt::format("cannot make the folder '{}': {}", dir, e.code().message()),
                    "pass a folder you can write to");
  }
}

int64_t wsj_section(const std::string& doc_id) {
  // wsj_SSNN: section SS, file NN.
  if (doc_id.size() < 8 || doc_id.compare(0, 4, "wsj_") != 0) return -1;
  for (size_t i = 4; i < 8; ++i) {
    if (!std::isdigit(static_cast<unsigned char>(doc_id[i]))) return -1;
  }
  return std::stoll(doc_id.substr(4, 2));
}

}  // namespace foldtron
