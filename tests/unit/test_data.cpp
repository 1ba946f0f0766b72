// The data pipeline: indexed datasets (the Megatron .bin/.idx layout, byte for byte, and a
// DataError naming the file and the problem for every kind of damage), document splits, GPT
// windows (every token of a split appears in an epoch's samples exactly as often as the windows
// say), blends (each dataset within one sample of its share after any number of samples),
// preprocessing of text and JSONL (known token counts, empty documents and inputs, deterministic
// output for any number of workers, pair and labelled examples), the metrics plot, and through
// the CLI: training on a preprocessed dataset resumes across an epoch boundary bit-exactly, and
// foldtron eval of the saved checkpoint gives the validation loss the training logged.
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "config/config.h"
#include "core/errors.h"
#include "core/files.h"
#include "data/corpus.h"
#include "data/example_dataset.h"
#include "data/gpt_dataset.h"
#include "data/indexed_dataset.h"
#include "data/preprocess.h"
#include "training/plot.h"
#include "run_command.h"
#include "scratch_files.h"

namespace foldtron::testing {
namespace {
namespace fs = std::filesystem;

class Data : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / fmt::format("foldtron_data_{}_{}", getpid(),
                                                   ::testing::UnitTest::GetInstance()->current_test_info()->name());
    remove_tree(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { remove_tree(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  std::string write(const std::string& name, const std::string& text) const {
    return testing::write_file(path(name), text);
  }
  // documents: each a list of sequences.
  std::string write_dataset(const std::string& name, const std::vector<std::vector<std::vector<int64_t>>>& documents,
                            TokenDType dtype = TokenDType::kUInt16) const {
    IndexedDatasetWriter writer(path(name), dtype);
    for (const auto& document : documents) {
      for (const auto& sequence : document) writer.add_sequence(sequence);
      writer.end_document();
    }
    writer.finish();
    return path(name);
  }
  fs::path dir_;
};

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void expect_data_error(const std::function<void()>& f, const std::vector<std::string>& words) {
  try {
    f();
    ADD_FAILURE() << "no DataError";
  } catch (const DataError& e) {
    const std::string text = std::string(e.what()) + " | hint: " + e.hint();
    for (const std::string& w : words) EXPECT_NE(text.find(w), std::string::npos) << text;
  }
}

template <typename T>
void put(std::string& bytes, size_t at, T value) {
  std::memcpy(bytes.data() + at, &value, sizeof(T));
}

TEST_F(Data, WritesMegatronsLayoutAndReadsItBack) {
  const std::string prefix = write_dataset("d", {{{5, 6, 7}}, {{8}, {}, {9, 10}}, {{65535}}});
  const std::string idx = read_all(prefix + ".idx");
  // Header: magic, version 1, dtype 8 (uint16), 5 sequences, 4 document boundaries.
  ASSERT_EQ(idx.size(), 34u + 12 * 5 + 8 * 4);
  EXPECT_EQ(idx.substr(0, 9), std::string("MMIDIDX\0\0", 9));
  uint64_t version = 0, sequences = 0, boundaries = 0;
  std::memcpy(&version, idx.data() + 9, 8);
  std::memcpy(&sequences, idx.data() + 18, 8);
  std::memcpy(&boundaries, idx.data() + 26, 8);
  EXPECT_EQ(version, 1u);
  EXPECT_EQ(static_cast<uint8_t>(idx[17]), 8);
  EXPECT_EQ(sequences, 5u);
  EXPECT_EQ(boundaries, 4u);
  int64_t pointer = 0, boundary = 0;
  std::memcpy(&pointer, idx.data() + 34 + 20 + 8 * 4, 8);  // the last sequence's byte offset
  EXPECT_EQ(pointer, 2 * 6);
  std::memcpy(&boundary, idx.data() + 34 + 60 + 8 * 2, 8);  // document 1 ends after sequence 4
  EXPECT_EQ(boundary, 4);
  EXPECT_EQ(fs::file_size(prefix + ".bin"), 2u * 7);

  const IndexedDataset data(prefix);
  EXPECT_EQ(data.dtype(), TokenDType::kUInt16);
  EXPECT_EQ(data.num_sequences(), 5);
  EXPECT_EQ(data.num_documents(), 3);
  EXPECT_EQ(data.num_tokens(), 7);
  EXPECT_EQ(data.sequence(0), (std::vector<int64_t>{5, 6, 7}));
  EXPECT_TRUE(data.sequence(2).empty());
  EXPECT_EQ(data.sequence(4), (std::vector<int64_t>{65535}));
  EXPECT_EQ(data.document_first_sequence(1), 1);
  EXPECT_EQ(data.document_end_sequence(1), 4);
  EXPECT_EQ(data.document_start(2), 6);
  std::vector<int64_t> window(4);
  data.read(2, 4, window.data());  // across documents
  EXPECT_EQ(window, (std::vector<int64_t>{7, 8, 9, 10}));
  expect_data_error([&] { data.read(5, 3, window.data()); }, {"tokens [5, 8) are outside", "7 tokens"});

  // int32 for large vocabularies; ids that do not fit are refused.
  const IndexedDataset wide(write_dataset("w", {{{70000, 1}}}, TokenDType::kInt32));
  EXPECT_EQ(wide.sequence(0), (std::vector<int64_t>{70000, 1}));
  EXPECT_EQ(token_dtype_for(32000), TokenDType::kUInt16);
  EXPECT_EQ(token_dtype_for(65537), TokenDType::kInt32);
  IndexedDatasetWriter narrow(path("n"), TokenDType::kUInt16);
  expect_data_error([&] { narrow.add_sequence({65536}); }, {"token id 65536 does not fit", "uint16"});
}

TEST_F(Data, DamagedFilesAreDataErrorsNamingFileAndProblem) {
  const std::string prefix = write_dataset("d", {{{1, 2, 3}}, {{4, 5}}});
  const std::string idx = read_all(prefix + ".idx"), bin = read_all(prefix + ".bin");
  const auto with = [&](const std::string& new_idx, const std::string& new_bin) {
    std::ofstream(prefix + ".idx", std::ios::binary | std::ios::trunc) << new_idx;
    std::ofstream(prefix + ".bin", std::ios::binary | std::ios::trunc) << new_bin;
    return [prefix] { IndexedDataset data(prefix); };
  };
  expect_data_error(with(idx, bin.substr(0, 6)), {prefix + ".bin", "holds 6 bytes", "describes 10", "truncated"});
  std::string bad = idx;
  bad[0] = 'X';
  expect_data_error(with(bad, bin), {prefix + ".idx", "wrong magic"});
  bad = idx;
  put<uint64_t>(bad, 9, 2);
  expect_data_error(with(bad, bin), {prefix + ".idx", "version 2"});
  bad = idx;
  bad[17] = 9;
  expect_data_error(with(bad, bin), {prefix + ".idx", "unknown token dtype code 9"});
  bad = idx;
  put<int64_t>(bad, 34 + 8 + 8, 400);  // the second sequence's offset
  expect_data_error(with(bad, bin), {prefix + ".idx", "sequence 1 starts at byte 400", "expected 6"});
  bad = idx;
  put<int64_t>(bad, 34 + 24 + 16, 7);  // the last document boundary
  expect_data_error(with(bad, bin), {prefix + ".idx", "document boundary 2 is 7"});
  expect_data_error(with(idx.substr(0, 40), bin), {prefix + ".idx", "do not hold"});
  expect_data_error(with(idx.substr(0, 10), bin), {prefix + ".idx", "shorter than the header"});
  fs::remove(prefix + ".bin");
  expect_data_error([&] { IndexedDataset data(prefix); }, {"cannot read the indexed dataset", prefix + ".bin"});
}

TEST(Splits, LargestRemainderOfDocuments) {
  auto r = split_documents(1000, {969, 30, 1});
  EXPECT_EQ(r[0], (std::pair<int64_t, int64_t>{0, 969}));
  EXPECT_EQ(r[1], (std::pair<int64_t, int64_t>{969, 999}));
  EXPECT_EQ(r[2], (std::pair<int64_t, int64_t>{999, 1000}));
  r = split_documents(20, {969, 30, 1});  // 19.38, 0.6, 0.02: the leftover goes to valid
  EXPECT_EQ(r[0].second, 19);
  EXPECT_EQ(r[1], (std::pair<int64_t, int64_t>{19, 20}));
  EXPECT_EQ(r[2], (std::pair<int64_t, int64_t>{20, 20}));
  r = split_documents(1, {969, 30, 1});
  EXPECT_EQ(r[0], (std::pair<int64_t, int64_t>{0, 1}));
  r = split_documents(7, {1, 1, 1});
  EXPECT_EQ(r[0].second - r[0].first + r[1].second - r[1].first + r[2].second - r[2].first, 7);
}

// Tokens numbered by their position, so a window says where it came from.
std::shared_ptr<const IndexedDataset> numbered(const std::vector<int32_t>& document_lengths) {
  std::vector<char> tokens;
  std::vector<int64_t> ends;
  int32_t next = 0;
  for (int32_t length : document_lengths) {
    for (int32_t i = 0; i < length; ++i, ++next) tokens.insert(tokens.end(), reinterpret_cast<char*>(&next),
                                                               reinterpret_cast<char*>(&next) + 4);
    ends.push_back(static_cast<int64_t>(ends.size()) + 1);
  }
  return std::make_shared<IndexedDataset>("numbered", index_bytes(TokenDType::kInt32, document_lengths, ends),
                                          std::move(tokens));
}

TEST(GptDataset, EveryTokenAppearsAsOftenAsTheWindowsSay) {
  const auto data = numbered({13, 40, 7, 25, 31});  // 116 tokens
  const int64_t s = 8;
  const GptDataset split(data, 1, 4, s, 42);  // documents 1-3: tokens [13, 85)
  EXPECT_EQ(split.num_tokens(), 72);
  EXPECT_EQ(split.num_windows(), (72 - 1) / s);
  for (int64_t epoch = 0; epoch < 3; ++epoch) {
    std::map<int64_t, int64_t> seen;
    std::set<int64_t> starts;
    std::vector<int64_t> window(s + 1);
    for (int64_t i = 0; i < split.num_windows(); ++i) {
      split.window(epoch * split.num_windows() + i, window.data());
      for (int64_t k = 0; k <= s; ++k) EXPECT_EQ(window[k], window[0] + k);  // contiguous, across documents
      starts.insert(window[0]);
      for (int64_t token : window) ++seen[token];
    }
    EXPECT_EQ(static_cast<int64_t>(starts.size()), split.num_windows());  // each window once per epoch
    const int64_t covered_end = 13 + split.num_windows() * s;
    for (int64_t t = 0; t < 116; ++t) {
      int64_t expected = 0;
      if (t >= 13 && t <= covered_end) expected = (t > 13 && t < covered_end && (t - 13) % s == 0) ? 2 : 1;
      EXPECT_EQ(seen[t], expected) << "token " << t << " epoch " << epoch;
    }
  }
  // Epochs are reshuffled; the same seed gives the same order.
  const GptDataset again(data, 1, 4, s, 42), other(data, 1, 4, s, 43);
  std::vector<int64_t> order0, order1, order_again, order_other;
  for (int64_t i = 0; i < split.num_windows(); ++i) {
    order0.push_back(split.window_start(i));
    order1.push_back(split.window_start(split.num_windows() + i));
    order_again.push_back(again.window_start(i));
    order_other.push_back(other.window_start(i));
  }
  EXPECT_NE(order0, order1);
  EXPECT_EQ(order0, order_again);
  EXPECT_NE(order0, order_other);
  EXPECT_EQ(GptDataset(data, 2, 3, s, 1).num_windows(), 0);  // 7 tokens: no window of 9
}

TEST(BlendedDataset, EachDatasetWithinOneSampleOfItsShare) {
  const auto data = numbered({100, 100, 100});
  std::vector<GptDataset> parts{GptDataset(data, 0, 1, 4, 1), GptDataset(data, 1, 2, 4, 2), GptDataset(data, 2, 3, 4, 3)};
  const std::vector<double> weights{5, 3, 2};
  const BlendedDataset blend(parts, weights);
  std::vector<int64_t> counts(3, 0);
  for (int64_t n = 1; n <= 10000; ++n) {
    const auto [part, within] = blend.locate(n - 1);
    EXPECT_EQ(within, counts[static_cast<size_t>(part)]);  // each part's samples in order
    ++counts[static_cast<size_t>(part)];
    for (size_t d = 0; d < 3; ++d) {
      ASSERT_LT(std::abs(static_cast<double>(counts[d]) - weights[d] / 10 * static_cast<double>(n)), 1.0)
          << "part " << d << " after " << n;
    }
  }
  EXPECT_EQ(counts, (std::vector<int64_t>{5000, 3000, 2000}));
  // The assignment of a sample does not depend on what was asked before.
  const BlendedDataset fresh(parts, weights);
  EXPECT_EQ(fresh.locate(7777), blend.locate(7777));
  std::vector<int64_t> a(5), b(5);
  blend.window(123, a.data());
  const auto [part, within] = blend.locate(123);
  parts[static_cast<size_t>(part)].window(within, b.data());
  EXPECT_EQ(a, b);
}

TEST(LmCorpus, ReadsBlendsAndSplitsAndChecksTheVocabulary) {
  const auto dir = fs::temp_directory_path() / fmt::format("foldtron_lmcorpus_{}", getpid());
  fs::create_directories(dir);
  for (const std::string name : {"a", "b"}) {
    IndexedDatasetWriter writer((dir / name).string(), TokenDType::kUInt16);
    for (int d = 0; d < 50; ++d) {
      writer.add_sequence(std::vector<int64_t>(40, name == "a" ? 3 : 4));
      writer.end_document();
    }
    writer.finish();
  }
  DataConfig data;
  data.path = fmt::format("0.25 {0}/a 0.75 {0}/b", dir.string());
  data.split = "8,2";
  const LmCorpus corpus(data, 16, 8, -1, 7);
  EXPECT_EQ(corpus.num_windows(Split::kTrain), 2 * ((40 * 40 - 1) / 16));
  EXPECT_EQ(corpus.num_windows(Split::kValid), 2 * ((10 * 40 - 1) / 16));
  EXPECT_EQ(corpus.num_windows(Split::kTest), 0);
  const torch::Tensor batch = corpus.batch(Split::kTrain, 0, 400);
  EXPECT_EQ(batch.sizes(), (std::vector<int64_t>{400, 17}));
  EXPECT_EQ((batch.select(1, 0) == 3).sum().item<int64_t>(), 100);  // exactly a quarter
  expect_data_error([&] { corpus.batch(Split::kTest, 0, 1); }, {"the test split of the data is empty"});
  const LmCorpus small(data, 16, 4, -1, 7);  // ids 4 are past a vocabulary of 4
  expect_data_error([&] { small.batch(Split::kTrain, 0, 64); }, {"token id 4, outside model.vocab_size 4"});
  data.path = (dir / "missing").string();
  data.tokenizer = Tokenizer::kSentencePiece;
  expect_data_error([&] { LmCorpus c(data, 16, 8, -1, 7); }, {"is not a preprocessed dataset", "foldtron preprocess"});
  data.path = "0.5 a b c";
  expect_data_error([&] { LmCorpus c(data, 16, 8, -1, 7); }, {"'b' is not a positive weight"});
  data.path = "0.5 a b";
  expect_data_error([&] { LmCorpus c(data, 16, 8, -1, 7); }, {"is neither one path nor weight-prefix pairs"});
  // A blend's dataset without a training window is refused, not dropped.
  data.path = fmt::format("0.5 {0}/a 0.5 {0}/b", dir.string());
  data.tokenizer = Tokenizer::kByte;
  expect_data_error([&] { LmCorpus c(data, 4000, 8, -1, 7); }, {"of the blend has no training window of 4001 tokens"});
  // Data preprocessed with another tokenizer, or for a larger vocabulary than the model's.
  std::ofstream((dir / "a.json").string()) << R"({"vocab_size": 300, "tokenizer": "other.model", "fields": ["text"]})";
  data.path = (dir / "a").string();
  expect_data_error([&] { LmCorpus c(data, 16, 512, 256, 7); },
                    {"was preprocessed with a tokenizer of 300 ids (other.model), but the configured one has 256"});
  expect_data_error([&] { LmCorpus c(data, 16, 256, -1, 7); }, {"ids of a 300-id vocabulary, more than model.vocab_size 256"});
  std::ofstream((dir / "a.json").string(), std::ios::trunc) << "{not json";
  expect_data_error([&] { LmCorpus c(data, 16, 256, -1, 7); }, {"a.json' is not valid JSON"});
  remove_tree(dir);
}

TEST_F(Data, PreprocessesTextWithKnownCounts) {
  const std::string lines = write("lines.txt", "hello world\n\nsecond line\r\n  \nthird\n");
  PreprocessOptions options;
  options.inputs = {lines};
  options.output_prefix = path("out/lines");
  options.progress = false;
  const ByteTokenizer bytes;  // no EOS: the token count is the bytes of the non-empty lines
  PreprocessSummary s = preprocess(options, bytes);
  EXPECT_EQ(s.documents, 4);  // "  " is a document of two spaces
  EXPECT_EQ(s.skipped, 1);
  EXPECT_EQ(s.tokens, 11 + 11 + 2 + 5);
  const IndexedDataset data(path("out/lines"));
  EXPECT_EQ(data.num_documents(), 4);
  EXPECT_EQ(bytes.decode(data.sequence(1)), "second line");
  const nlohmann::json meta = nlohmann::json::parse(read_all(path("out/lines.json")));
  EXPECT_EQ(meta["tokens"], 29);
  EXPECT_EQ(meta["vocab_size"], 256);
  EXPECT_EQ(meta["fields"], nlohmann::json::array({"text"}));

  options.paragraphs = true;
  options.output_prefix = path("paragraphs");
  s = preprocess(options, bytes);
  EXPECT_EQ(s.documents, 3);  // "  " is a blank line: it separates
  EXPECT_EQ(bytes.decode(IndexedDataset(path("paragraphs")).sequence(0)), "hello world");
  EXPECT_EQ(bytes.decode(IndexedDataset(path("paragraphs")).sequence(1)), "second line");

  options.inputs = {write("empty.txt", "")};
  options.output_prefix = path("empty");
  s = preprocess(options, bytes);
  EXPECT_EQ(s.documents, 0);
  EXPECT_EQ(IndexedDataset(path("empty")).num_tokens(), 0);
}

TEST_F(Data, OutputIsTheSameForAnyNumberOfWorkers) {
  std::string text;
  for (int i = 0; i < 9000; ++i) text += fmt::format("document {} {}\n", i, std::string(static_cast<size_t>(i % 17), 'x'));
  PreprocessOptions options;
  options.inputs = {write("many.txt", text)};
  options.progress = false;
  const ByteTokenizer bytes;
  options.workers = 1;
  options.output_prefix = path("one");
  preprocess(options, bytes);
  options.workers = 3;
  options.output_prefix = path("three");
  preprocess(options, bytes);
  EXPECT_EQ(read_all(path("one.bin")), read_all(path("three.bin")));
  EXPECT_EQ(read_all(path("one.idx")), read_all(path("three.idx")));
  EXPECT_EQ(IndexedDataset(path("one")).num_documents(), 9000);
}

TEST_F(Data, PreprocessesJsonlIntoPairsAndLabelledExamples) {
  const ByteTokenizer bytes;
  PreprocessOptions options;
  options.progress = false;
  options.inputs = {write("pairs.jsonl", "{\"en\": \"cat\", \"de\": \"Katze\"}\n\n{\"en\": \"dog\", \"de\": \"Hund\", \"x\": 1}\n"
                                          "{\"en\": \"\", \"de\": \"leer\"}\n")};
  options.json_keys = {"en", "de"};
  options.languages = {"en", "de"};
  options.output_prefix = path("pairs");
  PreprocessSummary s = preprocess(options, bytes);
  EXPECT_EQ(s.documents, 2);
  EXPECT_EQ(s.skipped, 1);  // an empty side
  const ExampleDataset pairs(path("pairs"));
  EXPECT_EQ(pairs.size(), 2);
  EXPECT_EQ(pairs.fields(), (std::vector<std::string>{"en", "de"}));
  EXPECT_EQ(pairs.languages(), (std::vector<std::string>{"en", "de"}));
  EXPECT_EQ(bytes.decode(pairs.example(1).fields[1]), "Hund");
  EXPECT_TRUE(pairs.labels().empty());

  options.inputs = {write("rel.jsonl", "{\"a\": \"it rained\", \"b\": \"we stayed\", \"sense\": \"Contingency.Cause\"}\n"
                                        "{\"a\": \"x\", \"b\": \"y\", \"sense\": [\"Expansion\", \"Contingency.Cause\"]}\n")};
  options.json_keys = {"a", "b"};
  options.languages.clear();
  options.label_key = "sense";
  options.output_prefix = path("rel");
  s = preprocess(options, bytes);
  EXPECT_EQ(s.labels, (std::vector<std::string>{"Contingency.Cause", "Expansion"}));
  const ExampleDataset relations(path("rel"));
  EXPECT_EQ(relations.labels(), s.labels);
  EXPECT_EQ(relations.example(0).labels, (std::vector<int64_t>{0}));
  EXPECT_EQ(relations.example(1).labels, (std::vector<int64_t>{1, 0}));
  EXPECT_EQ(bytes.decode(relations.example(0).fields[0]), "it rained");
  expect_data_error([&] { relations.example(2); }, {"example 2 is outside", "2 examples"});

  options.labels = {"Expansion"};
  options.output_prefix = path("fixed");
  expect_data_error([&] { preprocess(options, bytes); },
                    {"line 1 of '" + path("rel.jsonl") + "': label 'Contingency.Cause' is not one of --labels"});
  EXPECT_FALSE(fs::exists(path("fixed.idx")));  // nothing half-written is left
  EXPECT_FALSE(fs::exists(path("fixed.bin")));
  EXPECT_FALSE(fs::exists(path("fixed.bin.tmp")));

  // Malformed lines name the file and line.
  options.labels.clear();
  options.inputs = {write("bad.jsonl", "{\"a\": \"x\", \"b\": \"y\", \"sense\": \"E\"}\nnot json\n")};
  expect_data_error([&] { preprocess(options, bytes); }, {"line 2 of '" + path("bad.jsonl") + "' is not a JSON object"});
  options.inputs = {write("nokey.jsonl", "{\"a\": \"x\", \"sense\": \"E\"}\n")};
  expect_data_error([&] { preprocess(options, bytes); }, {"line 1 of", "has no string 'b'"});
  options.inputs = {write("nolabel.jsonl", "{\"a\": \"x\", \"b\": \"y\", \"sense\": 3}\n")};
  expect_data_error([&] { preprocess(options, bytes); }, {"'sense' is not a label or a list of labels"});
  options.inputs = {path("absent.jsonl")};
  expect_data_error([&] { preprocess(options, bytes); }, {"'" + path("absent.jsonl") + "' is not a readable file"});
  // --labels without --label-key; an output that would overwrite an input.
  options.inputs = {path("rel.jsonl")};
  options.label_key.clear();
  options.labels = {"Expansion"};
  expect_data_error([&] { preprocess(options, bytes); }, {"no --label-key says where they are"});
  options.labels.clear();
  options.output_prefix = path("rel");
  options.inputs = {path("rel.json")};
  expect_data_error([&] { preprocess(options, bytes); },
                    {"the input '" + path("rel.json") + "' is one of the files --output-prefix", "another --output-prefix"});
  // A labelled dataset is not language-model text.
  DataConfig lm;
  lm.path = path("rel");
  expect_data_error([&] { LmCorpus c(lm, 4, 256, 256, 1); }, {"holds labelled examples, not language-model text"});
  // A dataset read as examples needs its .json, and the .json must match the data.
  nlohmann::json meta = nlohmann::json::parse(read_all(path("rel.json")));
  meta["fields"] = {"a"};
  std::ofstream(path("rel.json"), std::ios::trunc) << meta.dump();
  expect_data_error([&] { ExampleDataset e(path("rel")); }, {"example 0 of '" + path("rel") + "' has 3 sequences, but its fields need 2"});
  fs::remove(path("rel.json"));
  expect_data_error([&] { ExampleDataset e(path("rel")); }, {"rel.json' is missing"});
}

TEST(Plot, DrawsLossValidationLearningRateAndThroughput) {
  MetricsRun run;
  run.label = "run";
  for (int step = 1; step <= 10; ++step) {
    run.records.push_back({{"step", step}, {"loss", 5.0 - 0.3 * step}, {"lr", 1e-3}, {"tokens_per_s", 1000 + step},
                           {"grad_norm", 1.0}});
    if (step % 5 == 0) run.records.push_back({{"step", step}, {"val_loss", 4.8 - 0.2 * step}});
  }
  const std::string svg = metrics_svg({run}, "demo <run>");
  EXPECT_EQ(svg.rfind("<?xml", 0), 0u);
  EXPECT_NE(svg.find("demo &lt;run&gt;"), std::string::npos);
  EXPECT_NE(svg.find(">val_loss</text>"), std::string::npos);
  EXPECT_NE(svg.find("stroke-dasharray"), std::string::npos);  // the validation series
  EXPECT_NE(svg.find("learning rate"), std::string::npos);
  EXPECT_NE(svg.find("throughput (tokens/s)"), std::string::npos);
  size_t polylines = 0;
  for (size_t at = svg.find("<polyline"); at != std::string::npos; at = svg.find("<polyline", at + 1)) ++polylines;
  EXPECT_EQ(polylines, 5u);  // loss, val_loss, lr, tokens/s, grad norm
  MetricsRun empty;
  expect_data_error([&] { metrics_svg({empty}, "x"); }, {"no training step"});
}

std::vector<nlohmann::json> records(const std::string& path, const std::string& key) {
  std::vector<nlohmann::json> out;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) {
    const nlohmann::json record = nlohmann::json::parse(line);
    if (record.contains(key)) out.push_back(record);
  }
  return out;
}

TEST_F(Data, ResumesAcrossAnEpochAndEvaluatesTheCheckpointAsTrainingDid) {
  // 60 documents of 41 bytes: 90% for training is 2,214 tokens, 69 windows of 33: the first
  // epoch ends in step 9 (8 sequences a step).
  std::string text;
  for (int d = 0; d < 60; ++d) text += fmt::format("document {:02} says {}\n", d, std::string(24, static_cast<char>('a' + d % 26)));
  const std::string corpus = write("corpus.txt", text);
  int code = -1;
  std::string log = run_command(fmt::format("{} preprocess --input {} --tokenizer byte --output-prefix {} 2>&1",
                                            FOLDTRON_BINARY, corpus, path("corpus")),
                                &code);
  ASSERT_EQ(code, 0) << log;
  const std::string common = fmt::format(
      "--preset tiny-dense --set model.num_layers=2 --set train.seq_length=32 --set train.global_batch_size=8 "
      "--set data.path={} --set data.split=90,10 --set train.eval_interval=5 --set train.eval_iters=2 "
      "--set train.lr_decay_iters=10",
      path("corpus"));
  log = run_command(fmt::format("{} train {} --train-iters 10 --metrics-file {} 2>&1", FOLDTRON_BINARY, common,
                                path("straight.jsonl")),
                    &code);
  ASSERT_EQ(code, 0) << log;
  EXPECT_NE(log.find("train/valid/test windows 69/7/0"), std::string::npos) << log;
  log = run_command(fmt::format("{0} train {1} --train-iters 6 --save {2} --metrics-file {3} 2>&1 && "
                                "{0} train {1} --train-iters 10 --load {2} --save {2} --metrics-file {3} 2>&1",
                                FOLDTRON_BINARY, common, path("ckpt"), path("resumed.jsonl")),
                    &code);
  ASSERT_EQ(code, 0) << log;
  const auto straight = records(path("straight.jsonl"), "loss"), resumed = records(path("resumed.jsonl"), "loss");
  ASSERT_EQ(straight.size(), 10u);
  ASSERT_EQ(resumed.size(), 10u);
  for (size_t i = 0; i < 10; ++i) {
    EXPECT_EQ(resumed[i]["loss"].get<double>(), straight[i]["loss"].get<double>()) << "step " << i + 1;
  }
  const auto validations = records(path("straight.jsonl"), "val_loss");
  ASSERT_EQ(validations.size(), 2u);
  EXPECT_EQ(validations[1]["step"], 10);
  // The first part of the resumed run also validated after its last step (6).
  const auto resumed_validations = records(path("resumed.jsonl"), "val_loss");
  ASSERT_EQ(resumed_validations.size(), 3u);
  EXPECT_EQ(resumed_validations[1]["step"], 6);
  EXPECT_EQ(resumed_validations[2]["val_loss"].get<double>(), validations[1]["val_loss"].get<double>());
  // foldtron eval of the step-10 checkpoint: the validation loss logged after step 10.
  // --log-level warning: standard output holds only the JSON lines.
  log = run_command(fmt::format("{} eval {} --load {} --log-level warning", FOLDTRON_BINARY, common, path("ckpt")),
                    &code);
  ASSERT_EQ(code, 0) << log;
  const nlohmann::json eval = nlohmann::json::parse(log.substr(0, log.find('\n')));
  EXPECT_EQ(eval["step"], 10);
  EXPECT_NEAR(eval["val_loss"].get<double>(), validations[1]["val_loss"].get<double>(), 1e-6);
  EXPECT_EQ(eval["val_tokens"], 2 * 8 * 32);
}

}  // namespace
}  // namespace foldtron::testing
