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
      if (!in_.is_open() || in_.eof()) {
        if (in_.is_open()) in_.close();
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
  int64_t bytes_read() { return done_bytes_ + (in_.is_open() ? static_cast<int64_t>(in_.tellg()) : 0); }

 private:
  bool getline(std::string& line) {
    if (!std::getline(in_, line)) {
      done_bytes_ += static_cast<int64_t>(std::filesystem::file_size(path_));
      in_.close();
      in_.clear();
      in_.setstate(std::ios::eofbit);
      return false;
    }
    ++line_number_;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    return true;
  }

  std::optional<Record> read_text() {
    std::string line;
    if (!options_.paragraphs) {
      if (!getline(line)) return std::nullopt;
      return Record{{line}, {}};
    }
    std::string paragraph;
    bool any = false;
    while (getline(line)) {
      if (blank(line)) {
        if (any) return Record{{paragraph}, {}};
        continue;
      }
      paragraph += (any ? "\n" : "") + line;
      any = true;
    }
    if (any) return Record{{paragraph}, {}};
    return std::nullopt;
  }

  std::optional<Record> read_json() {
    std::string line;
    while (getline(line)) {
      if (blank(line)) continue;
      const nlohmann::json object = nlohmann::json::parse(line, nullptr, false);
      const std::string where = fmt::format("line {} of '{}'", line_number_, path_);
      if (object.is_discarded() || !object.is_object()) {
        throw DataError(fmt::format("{} is not a JSON object", where), "write one JSON object per line (JSONL)");
      }
      Record record;
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

}  // namespace

PreprocessSummary preprocess(const PreprocessOptions& options, const TextTokenizer& tokenizer) {
  const auto start = Clock::now();
  PreprocessSummary summary;
  if (options.inputs.empty()) throw DataError("no input files", "name them with --input FILE...");
  int64_t total_bytes = 0;
  for (const std::string& input : options.inputs) {
    std::error_code error;
    const auto size = std::filesystem::file_size(input, error);
    if (error || std::filesystem::is_directory(input)) {
      throw DataError(fmt::format("the input '{}' is not a readable file", input), "check the path");
    }
    total_bytes += static_cast<int64_t>(size);
  }
  if (!options.languages.empty() && options.languages.size() != std::max<size_t>(1, options.json_keys.size())) {
    throw DataError(fmt::format("{} languages for {} fields", options.languages.size(),
                                std::max<size_t>(1, options.json_keys.size())),
                    "give one language per --json-key");
  }
  const std::filesystem::path parent = std::filesystem::path(options.output_prefix).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent);
  summary.dtype = token_dtype_for(tokenizer.vocab_size());
  summary.labels = options.labels;
  std::map<std::string, int64_t> label_ids;
  for (size_t i = 0; i < options.labels.size(); ++i) label_ids[options.labels[i]] = static_cast<int64_t>(i);
  const bool fixed_labels = !options.labels.empty();
  const int64_t eos = options.append_eos ? tokenizer.eos_id() : -1;
  const int64_t workers =
      options.workers > 0 ? options.workers : std::max<int64_t>(1, static_cast<int64_t>(std::thread::hardware_concurrency()));

  IndexedDatasetWriter writer(options.output_prefix, summary.dtype);
  RecordReader reader(options);
  const bool tty = ::isatty(STDERR_FILENO) != 0;
  auto last_report = start;
  const auto report = [&](bool final) {
    const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    const double fraction = total_bytes > 0 ? static_cast<double>(reader.bytes_read()) / static_cast<double>(total_bytes) : 1;
    const double eta = fraction > 0 ? seconds / fraction - seconds : 0;
    const std::string line = fmt::format("preprocess: {:5.1f}% of {}B, {} documents, {} tokens, {} tokens/s{}",
                                         100 * std::min(1.0, fraction), human(static_cast<double>(total_bytes)),
                                         summary.documents, human(static_cast<double>(summary.tokens)),
                                         human(static_cast<double>(summary.tokens) / std::max(seconds, 1e-9)),
                                         final ? "" : fmt::format(", ETA {:.0f} s", eta));
    std::fprintf(stderr, tty ? "\r%s%s" : "%s\n", line.c_str(), tty && final ? "\n" : "");
    std::fflush(stderr);
  };
  for (;;) {
    const std::vector<Record> records = reader.next(4096);
    if (records.empty()) break;
    const auto ids = tokenize(records, tokenizer, workers);
    for (size_t i = 0; i < records.size(); ++i) {
      const bool empty = std::any_of(ids[i].begin(), ids[i].end(), [](const auto& field) { return field.empty(); });
      if (empty) {
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
        std::vector<int64_t> labels;
        for (const std::string& name : records[i].labels) {
          auto it = label_ids.find(name);
          if (it == label_ids.end()) {
            if (fixed_labels) {
              throw DataError(fmt::format("label '{}' of document {} is not one of --labels", name,
                                          summary.documents + summary.skipped + 1),
                              "add it to --labels, or leave --labels out to take labels in order of appearance");
            }
            it = label_ids.emplace(name, static_cast<int64_t>(summary.labels.size())).first;
            summary.labels.push_back(name);
          }
          labels.push_back(it->second);
        }
        writer.add_sequence(labels);
        ++summary.sequences;
      }
      writer.end_document();
      ++summary.documents;
    }
    if (options.progress && Clock::now() - last_report > std::chrono::seconds(2)) {
      report(false);
      last_report = Clock::now();
    }
  }
  writer.finish();
  summary.input_bytes = total_bytes;
  summary.output_bytes = writer.bytes_written();
  summary.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  if (options.progress) report(true);

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
  return summary;
}

}  // namespace foldtron
