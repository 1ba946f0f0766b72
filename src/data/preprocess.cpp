// Text and JSONL into indexed datasets (see preprocess.h).
#include "data/preprocess.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <thread>

#include <unistd.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/errors.h"
#include "core/files.h"

namespace foldtron {
namespace {

using Clock = std::chrono::steady_clock;

// One document as read: its fields' text and its label names.
struct Record {
  std::vector<std::string> fields;
  std::vector<std::string> labels;
  std::string where;  // "line L of 'F'", for messages
};

bool blank(const std::string& text) { return text.find_first_not_of(" \t\r\n\f\v") == std::string::npos; }

// Reads records from the inputs in order, a chunk at a time.
class RecordReader {
 public:
  explicit RecordReader(const PreprocessOptions& options) : options_(options) {}

  // Up to `limit` records (fewer only at the end of the last input).
  std::vector<Record> next(size_t limit) {
    std::vector<Record> out;
    while (out.size() < limit) {
      if (!in_.is_open()) {
        if (file_ == options_.inputs.size()) break;
        path_ = options_.inputs[file_++];
        in_.open(path_, std::ios::binary);
        if (!in_) throw DataError(fmt::format("cannot read the input '{}'", path_), "check the path and its permissions");
        line_number_ = 0;
      }
      std::optional<Record> record = options_.json_keys.empty() ? read_text() : read_json();
      if (record) out.push_back(std::move(*record));
    }
    return out;
  }
  // Input bytes consumed so far (for the progress line).
  int64_t bytes_read() {
    const std::streamoff at = in_.is_open() ? static_cast<std::streamoff>(in_.tellg()) : 0;
    return done_bytes_ + std::max<int64_t>(0, static_cast<int64_t>(at));
  }

 private:
  // The next line of the current file; false at its end, where the file is closed and counted.
  bool getline(std::string& line) {
    if (!in_.is_open()) return false;
    if (!std::getline(in_, line)) {
      std::error_code error;
      done_bytes_ += static_cast<int64_t>(std::filesystem::file_size(path_, error));
      in_.close();
      in_.clear();
      return false;
    }
    ++line_number_;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    return true;
  }
  std::string where() const { return fmt::format("line {} of '{}'", line_number_, path_); }

  std::optional<Record> read_text() {
    std::string line;
    if (!options_.paragraphs) {
      if (!getline(line)) return std::nullopt;
      return Record{{line}, {}, where()};
    }
    std::string paragraph, first_line;
    bool any = false;
    while (getline(line)) {
      if (blank(line)) {
        if (any) return Record{{paragraph}, {}, first_line};
        continue;
      }
      if (!any) first_line = where();
      paragraph += (any ? "\n" : "") + line;
      any = true;
    }
    if (any) return Record{{paragraph}, {}, first_line};
    return std::nullopt;
  }

  std::optional<Record> read_json() {
    std::string line;
    while (getline(line)) {
      if (blank(line)) continue;
      const nlohmann::json object = nlohmann::json::parse(line, nullptr, false);
      const std::string where = this->where();
      if (object.is_discarded() || !object.is_object()) {
        throw DataError(fmt::format("{} is not a JSON object", where), "write one JSON object per line (JSONL)");
      }
      Record record;
      record.where = where;
      for (const std::string& key : options_.json_keys) {
        const auto it = object.find(key);
        if (it == object.end() || !it->is_string()) {
          throw DataError(fmt::format("{} has no string '{}'", where, key),
                          "name the text fields with --json-key (every line needs them)");
        }
        record.fields.push_back(it->get<std::string>());
      }
      if (!options_.label_key.empty()) {
        const auto it = object.find(options_.label_key);
        if (it != object.end() && it->is_string()) record.labels.push_back(it->get<std::string>());
        if (it != object.end() && it->is_array()) {
          for (const auto& label : *it) {
            if (label.is_string()) record.labels.push_back(label.get<std::string>());
          }
        }
        if (record.labels.empty() || (it->is_array() && record.labels.size() != it->size())) {
          throw DataError(fmt::format("{}: '{}' is not a label or a list of labels", where, options_.label_key),
                          "give each line a string label or a non-empty list of them");
        }
      }
      return record;
    }
    return std::nullopt;
  }

  const PreprocessOptions& options_;
  size_t file_ = 0;
  std::string path_;
  std::ifstream in_;
  int64_t line_number_ = 0;
  int64_t done_bytes_ = 0;
};

// The token ids of every field of every record, tokenized by `workers` threads over contiguous
// slices (the result does not depend on the number of threads).
std::vector<std::vector<std::vector<int64_t>>> tokenize(const std::vector<Record>& records,
                                                        const TextTokenizer& tokenizer, int64_t workers) {
  std::vector<std::vector<std::vector<int64_t>>> ids(records.size());
  const size_t threads = std::max<size_t>(1, std::min<size_t>(static_cast<size_t>(workers), records.size()));
  const size_t per_thread = (records.size() + threads - 1) / std::max<size_t>(threads, 1);
  std::vector<std::thread> pool;
  std::vector<std::exception_ptr> errors(threads);
  for (size_t t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      try {
        for (size_t i = t * per_thread; i < std::min(records.size(), (t + 1) * per_thread); ++i) {
          for (const std::string& text : records[i].fields) ids[i].push_back(tokenizer.encode(text));
        }
      } catch (...) {
        errors[t] = std::current_exception();
      }
    });
  }
  for (std::thread& thread : pool) thread.join();
  for (const std::exception_ptr& error : errors) {
    if (error) std::rethrow_exception(error);
  }
  return ids;
}

std::string human(double value) {
  if (value >= 1e9) return fmt::format("{:.2f}G", value / 1e9);
  if (value >= 1e6) return fmt::format("{:.2f}M", value / 1e6);
  if (value >= 1e3) return fmt::format("{:.1f}k", value / 1e3);
  return fmt::format("{:.0f}", value);
}

// The inputs' total size; DataError for an input that is not a readable file, or one that the
// output would overwrite.
int64_t check_inputs(const PreprocessOptions& options) {
  if (options.inputs.empty()) throw DataError("no input files", "name them with --input FILE...");
  namespace fs = std::filesystem;
  std::vector<fs::path> outputs;
  for (const char* extension : {".bin", ".idx", ".json"}) {
    outputs.push_back(fs::weakly_canonical(fs::absolute(options.output_prefix + extension)));
  }
  int64_t total = 0;
  for (const std::string& input : options.inputs) {
    std::error_code error;
    const auto size = fs::file_size(input, error);
    if (error || fs::is_directory(input)) {
      throw DataError(fmt::format("the input '{}' is not a readable file", input), "check the path");
    }
    const fs::path canonical = fs::weakly_canonical(fs::absolute(input));
    if (std::find(outputs.begin(), outputs.end(), canonical) != outputs.end()) {
      throw DataError(fmt::format("the input '{}' is one of the files --output-prefix {} writes", input,
                                  options.output_prefix),
                      "choose another --output-prefix (it writes PREFIX.bin, PREFIX.idx and PREFIX.json)");
    }
    total += static_cast<int64_t>(size);
  }
  const size_t fields = std::max<size_t>(1, options.json_keys.size());
  if (!options.languages.empty() && options.languages.size() != fields) {
    throw DataError(fmt::format("{} languages for {} fields", options.languages.size(), fields),
                    "give one language per --json-key");
  }
  return total;
}

// Label names to ids: the fixed list, or new names numbered as they appear.
class LabelIds {
 public:
  explicit LabelIds(const std::vector<std::string>& fixed) : names_(fixed), fixed_(!fixed.empty()) {
    for (size_t i = 0; i < fixed.size(); ++i) ids_[fixed[i]] = static_cast<int64_t>(i);
  }
  std::vector<int64_t> ids(const Record& record) {
    std::vector<int64_t> out;
    for (const std::string& name : record.labels) {
      auto it = ids_.find(name);
      if (it == ids_.end()) {
        if (fixed_) {
          throw DataError(fmt::format("{}: label '{}' is not one of --labels", record.where, name),
                          "add it to --labels, or leave --labels out to take labels in order of appearance");
        }
        it = ids_.emplace(name, static_cast<int64_t>(names_.size())).first;
        names_.push_back(name);
      }
      out.push_back(it->second);
    }
    return out;
  }
  const std::vector<std::string>& names() const { return names_; }

 private:
  std::map<std::string, int64_t> ids_;
  std::vector<std::string> names_;
  bool fixed_;
};

// The progress line on stderr (rewritten in place on a terminal).
void report_progress(const PreprocessSummary& summary, int64_t done_bytes, int64_t total_bytes, double seconds,
                     bool final) {
  const double fraction = total_bytes > 0 ? static_cast<double>(done_bytes) / static_cast<double>(total_bytes) : 1;
  const double eta = fraction > 0 ? seconds / fraction - seconds : 0;
  const std::string line = fmt::format("preprocess: {:5.1f}% of {}B, {} documents, {} tokens, {} tokens/s{}",
                                       100 * std::min(1.0, fraction), human(static_cast<double>(total_bytes)),
                                       summary.documents, human(static_cast<double>(summary.tokens)),
                                       human(static_cast<double>(summary.tokens) / std::max(seconds, 1e-9)),
                                       final ? "" : fmt::format(", ETA {:.0f} s", eta));
  const bool tty = ::isatty(STDERR_FILENO) != 0;
  std::fprintf(stderr, tty ? "\r%s%s" : "%s\n", line.c_str(), tty && final ? "\n" : "");
  std::fflush(stderr);
}

// PREFIX.json: the tokenizer, the fields and the counts.
void write_metadata(const PreprocessOptions& options, const TextTokenizer& tokenizer, const PreprocessSummary& summary,
                    int64_t eos) {
  nlohmann::ordered_json meta;
  meta["format"] = "foldtron-indexed";
  meta["version"] = 1;
  meta["tokenizer"] = options.tokenizer_name;
  meta["tokenizer_kind"] = tokenizer.describe();
  meta["vocab_size"] = tokenizer.vocab_size();
  meta["eos_id"] = eos;
  meta["dtype"] = token_dtype_name(summary.dtype);
  meta["fields"] = options.json_keys.empty() ? std::vector<std::string>{"text"} : options.json_keys;
  meta["languages"] = options.languages;
  meta["labels"] = summary.labels;
  meta["documents"] = summary.documents;
  meta["skipped_empty"] = summary.skipped;
  meta["sequences"] = summary.sequences;
  meta["tokens"] = summary.tokens;
  nlohmann::ordered_json inputs = nlohmann::ordered_json::array();
  for (const std::string& input : options.inputs) {
    inputs.push_back({{"path", input}, {"bytes", std::filesystem::file_size(input)}});
  }
  meta["inputs"] = inputs;
  write_file_atomically(options.output_prefix + ".json", meta.dump(1) + "\n");
}

}  // namespace

PreprocessSummary preprocess(const PreprocessOptions& options, const TextTokenizer& tokenizer) {
  const auto start = Clock::now();
  const int64_t total_bytes = check_inputs(options);
  if (!options.labels.empty() && options.label_key.empty()) {
    throw DataError("--labels names labels, but no --label-key says where they are", "add --label-key KEY");
  }
  const std::filesystem::path parent = std::filesystem::path(options.output_prefix).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent);
  PreprocessSummary summary;
  summary.dtype = token_dtype_for(tokenizer.vocab_size());
  LabelIds labels(options.labels);
  const int64_t eos = options.append_eos ? tokenizer.eos_id() : -1;
  const int64_t workers =
      options.workers > 0 ? options.workers : std::max<int64_t>(1, static_cast<int64_t>(std::thread::hardware_concurrency()));
  const auto seconds = [&] { return std::chrono::duration<double>(Clock::now() - start).count(); };

  IndexedDatasetWriter writer(options.output_prefix, summary.dtype);
  RecordReader reader(options);
  double last_report = 0;
  for (;;) {
    const std::vector<Record> records = reader.next(4096);
    if (records.empty()) break;
    const auto ids = tokenize(records, tokenizer, workers);
    for (size_t i = 0; i < records.size(); ++i) {
      if (std::any_of(ids[i].begin(), ids[i].end(), [](const auto& field) { return field.empty(); })) {
        ++summary.skipped;
        continue;
      }
      for (std::vector<int64_t> field : ids[i]) {
        if (eos >= 0) field.push_back(eos);
        writer.add_sequence(field);
        summary.tokens += static_cast<int64_t>(field.size());
        ++summary.sequences;
      }
      if (!options.label_key.empty()) {
        writer.add_sequence(labels.ids(records[i]));
        ++summary.sequences;
      }
      writer.end_document();
      ++summary.documents;
    }
    if (options.progress && seconds() - last_report > 2) {
      report_progress(summary, reader.bytes_read(), total_bytes, seconds(), false);
      last_report = seconds();
    }
  }
  writer.finish();
  summary.labels = labels.names();
  summary.input_bytes = total_bytes;
  summary.output_bytes = writer.bytes_written();
  summary.seconds = seconds();
  if (options.progress) report_progress(summary, total_bytes, total_bytes, summary.seconds, true);
  write_metadata(options, tokenizer, summary, eos);
  return summary;
}

}  // namespace foldtron
