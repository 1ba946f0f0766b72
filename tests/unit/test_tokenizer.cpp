// Tokenizers: the byte tokenizer; a sentencepiece model trained by `foldtron tokenizer train` on a
// fixture corpus (English license text plus German and French lines) round-trips Unicode text
// exactly, keeps its special and user-defined pieces at their ids, and gives the same ids as
// sentencepiece's own command-line tool spm_encode; each error names its problem.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "config/config.h"
#include "core/errors.h"
#include "core/files.h"
#include "data/indexed_dataset.h"
#include "data/tokenizer.h"
#include "run_command.h"

namespace foldtron::testing {
namespace {
namespace fs = std::filesystem;

const std::vector<std::string> kUnicodeLines{
    "Grüße aus Köln: Straße, Größe, Übermaß.",
    "Déjà vu — naïve façade, cœur et âme ; « guillemets ».",
    "Emoji and symbols: ☃ → ∑ 東京 ✓",
};

// A fixture corpus: the GPL's text (every Debian system has it) and some German and French lines.
std::string fixture_corpus(const fs::path& dir) {
  fs::create_directories(dir);
  const std::string path = (dir / "corpus.txt").string();
  std::ofstream out(path);
  std::ifstream gpl("/usr/share/common-licenses/GPL-3");
  for (std::string line; std::getline(gpl, line);) {
    if (!line.empty()) out << line << "\n";
  }
  for (int i = 0; i < 20; ++i) {
    out << "Die Übersetzung der Lizenz ist nicht amtlich; größere Änderungen brauchen Zustimmung.\n"
        << "La traduction française n'est pas officielle ; les modifications sont très encadrées.\n";
  }
  return path;
}

// The trained model, made once for the whole suite.
class SentencePiece : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = fs::temp_directory_path() / fmt::format("foldtron_tokenizer_{}", getpid());
    remove_tree(dir_);
    const std::string corpus = fixture_corpus(dir_);
    int code = -1;
    log_ = run_command(fmt::format("{} tokenizer train --input {} --model-prefix {}/spm --vocab-size 600 "
                                   "--user-defined-symbols '<2en>' '<2de>' '<mask>' --threads 2 2>&1",
                                   FOLDTRON_BINARY, corpus, dir_.string()),
                       &code);
    code_ = code;
  }
  static void TearDownTestSuite() { remove_tree(dir_); }
  static std::string model() { return (dir_ / "spm.model").string(); }

  static fs::path dir_;
  static std::string log_;
  static int code_;
};
fs::path SentencePiece::dir_;
std::string SentencePiece::log_;
int SentencePiece::code_ = -1;

TEST(ByteTokenizer, EveryByteIsItsId) {
  const ByteTokenizer bytes;
  const std::string text = "Grüße ☃";
  const std::vector<int64_t> ids = bytes.encode(text);
  EXPECT_EQ(ids.size(), text.size());
  EXPECT_EQ(ids[0], 'G');
  EXPECT_EQ(bytes.decode(ids), text);
  try {
    bytes.decode({65, 256});
    FAIL() << "id 256 decoded";
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find("token id 256 is outside the vocabulary"), std::string::npos) << e.what();
  }
}

TEST_F(SentencePiece, TrainsAndRoundTripsUnicodeExactly) {
  ASSERT_EQ(code_, 0) << log_;
  EXPECT_NE(log_.find("spm.model and"), std::string::npos) << log_;
  const SentencePieceTokenizer tokenizer(model());
  EXPECT_EQ(tokenizer.vocab_size(), 600);
  for (const std::string& line : kUnicodeLines) {
    const std::vector<int64_t> ids = tokenizer.encode(line);
    EXPECT_LT(ids.size(), line.size()) << "pieces longer than a byte: " << line;
    EXPECT_EQ(tokenizer.decode(ids), line);
  }
  // Byte fallback: a character never seen in training comes back exactly.
  EXPECT_EQ(tokenizer.decode(tokenizer.encode("Ω ж")), "Ω ж");
}

TEST_F(SentencePiece, SpecialAndUserDefinedPiecesHaveTheirIds) {
  ASSERT_EQ(code_, 0) << log_;
  const SentencePieceTokenizer tokenizer(model());
  EXPECT_EQ(tokenizer.unk_id(), 0);
  EXPECT_EQ(tokenizer.bos_id(), 1);
  EXPECT_EQ(tokenizer.eos_id(), 2);
  EXPECT_EQ(tokenizer.pad_id(), 3);
  EXPECT_EQ(tokenizer.piece_id("<2en>"), 4);
  EXPECT_EQ(tokenizer.piece_id("<2de>"), 5);
  EXPECT_EQ(tokenizer.piece_id("<mask>"), 6);
  EXPECT_EQ(tokenizer.piece_id("<unk>"), 0);
  EXPECT_EQ(tokenizer.piece_id("<2xx>"), -1) << "a piece the vocabulary lacks is -1, not unk";
  // A language tag stays one piece inside text.
  const std::vector<int64_t> ids = tokenizer.encode("<2de> Hello world");
  ASSERT_FALSE(ids.empty());
  EXPECT_TRUE(std::find(ids.begin(), ids.end(), 5) != ids.end());
}

// The same ids as sentencepiece's own command-line encoder (Debian package sentencepiece), and
// `foldtron tokenizer encode`/`decode` agree with the library.
TEST_F(SentencePiece, MatchesSpmEncodeAndTheCli) {
  ASSERT_EQ(code_, 0) << log_;
  const std::string text = (dir_ / "text.txt").string();
  {
    std::ofstream out(text);
    for (const std::string& line : kUnicodeLines) out << line << "\n";
    out << "This program is free software: you can redistribute it and/or modify it.\n";
  }
  int code = -1;
  const std::string spm = run_command(fmt::format("spm_encode --model={} --output_format=id < {}", model(), text), &code);
  ASSERT_EQ(code, 0) << "spm_encode (scripts/setup.sh installs the sentencepiece package): " << spm;
  const std::string ours = run_command(fmt::format("{} tokenizer encode --model {} < {}", FOLDTRON_BINARY, model(), text),
                                       &code);
  ASSERT_EQ(code, 0) << ours;
  EXPECT_EQ(ours, spm);
  const SentencePieceTokenizer tokenizer(model());
  std::istringstream lines(ours);
  std::string first;
  std::getline(lines, first);
  std::string expected;
  for (int64_t id : tokenizer.encode(kUnicodeLines[0])) expected += (expected.empty() ? "" : " ") + std::to_string(id);
  EXPECT_EQ(first, expected);
  const std::string ids = (dir_ / "ids.txt").string();
  std::ofstream(ids) << ours;
  const std::string decoded =
      run_command(fmt::format("{} tokenizer decode --model {} < {}", FOLDTRON_BINARY, model(), ids), &code);
  ASSERT_EQ(code, 0) << decoded;
  std::ifstream original(text);
  std::stringstream want;
  want << original.rdbuf();
  EXPECT_EQ(decoded, want.str());
}

TEST_F(SentencePiece, ErrorsNameTheProblem) {
  int code = -1;
  std::string log = run_command(
      fmt::format("{} tokenizer encode --model {}/missing.model < /dev/null 2>&1", FOLDTRON_BINARY, dir_.string()),
      &code);
  EXPECT_EQ(code, 2) << log;
  EXPECT_NE(log.find("no sentencepiece model at"), std::string::npos) << log;
  const std::string vocab = (dir_ / "spm.vocab").string();
  log = run_command(fmt::format("{} tokenizer encode --model {} < /dev/null 2>&1", FOLDTRON_BINARY, vocab), &code);
  EXPECT_EQ(code, 2) << log;
  EXPECT_NE(log.find("is not a sentencepiece model"), std::string::npos) << log;
  log = run_command(fmt::format("echo '5 x7' | {} tokenizer decode --model {} 2>&1", FOLDTRON_BINARY, model()), &code);
  EXPECT_EQ(code, 2) << log;
  EXPECT_NE(log.find("line 1 of the input: 'x7' is not a token id"), std::string::npos) << log;
  log = run_command(fmt::format("echo '5 999999' | {} tokenizer decode --model {} 2>&1", FOLDTRON_BINARY, model()),
                    &code);
  EXPECT_EQ(code, 2) << log;
  EXPECT_NE(log.find("token id 999999 is outside the vocabulary"), std::string::npos) << log;
  log = run_command(fmt::format("{} tokenizer train --input {}/nothing.txt --model-prefix {}/x --vocab-size 100 2>&1",
                                FOLDTRON_BINARY, dir_.string(), dir_.string()),
                    &code);
  EXPECT_EQ(code, 2) << log;
  EXPECT_NE(log.find("nothing.txt' is not a readable file"), std::string::npos) << log;
  // More pieces than the text can make.
  const std::string tiny = (dir_ / "tiny.txt").string();
  std::ofstream(tiny) << "a b c\n";
  log = run_command(fmt::format("{} tokenizer train --input {} --model-prefix {}/x --vocab-size 5000 2>&1",
                                FOLDTRON_BINARY, tiny, dir_.string()),
                    &code);
  EXPECT_EQ(code, 2) << log;
  EXPECT_NE(log.find("sentencepiece could not train"), std::string::npos) << log;
}

// foldtron preprocess with the model: every line a document of its ids and EOS, the same ids the
// tokenizer gives in-process, with the summary line.
TEST_F(SentencePiece, PreprocessWritesTheTokenizersIdsWithEos) {
  ASSERT_EQ(code_, 0) << log_;
  const SentencePieceTokenizer tokenizer(model());
  const std::string text = (dir_ / "pre.txt").string();
  {
    std::ofstream out(text);
    for (const std::string& line : kUnicodeLines) out << line << "\n\n";
  }
  int code = -1;
  const std::string log = run_command(fmt::format("{} preprocess --input {} --tokenizer {} --output-prefix {}/pre "
                                                  "--workers 2 2>&1",
                                                  FOLDTRON_BINARY, text, model(), dir_.string()),
                                      &code);
  ASSERT_EQ(code, 0) << log;
  const IndexedDataset data((dir_ / "pre").string());
  ASSERT_EQ(data.num_documents(), static_cast<int64_t>(kUnicodeLines.size()));
  int64_t tokens = 0;
  for (size_t i = 0; i < kUnicodeLines.size(); ++i) {
    std::vector<int64_t> expected = tokenizer.encode(kUnicodeLines[i]);
    expected.push_back(tokenizer.eos_id());
    EXPECT_EQ(data.sequence(static_cast<int64_t>(i)), expected) << kUnicodeLines[i];
    tokens += static_cast<int64_t>(expected.size());
  }
  EXPECT_EQ(data.dtype(), TokenDType::kUInt16);
  EXPECT_NE(log.find(fmt::format("{} documents (3 empty ones skipped)", kUnicodeLines.size())), std::string::npos) << log;
  EXPECT_NE(log.find(fmt::format("{} tokens (uint16)", tokens)), std::string::npos) << log;
  EXPECT_NE(log.find("tokens/s"), std::string::npos) << log;
}

// Special tokens named in the config are checked against the tokenizer and the model's vocabulary.
TEST_F(SentencePiece, RequiredTokensAreCheckedAgainstTheVocabulary) {
  ASSERT_EQ(code_, 0) << log_;
  const SentencePieceTokenizer tokenizer(model());
  DataConfig data;
  data.tokenizer = Tokenizer::kSentencePiece;
  data.tokenizer_model = model();
  data.required_tokens = "<2de> <mask>";
  EXPECT_EQ(check_special_tokens(data, tokenizer, 600), (std::vector<int64_t>{5, 6}));
  const auto problems = [&](int64_t vocab) {
    try {
      check_special_tokens(data, tokenizer, vocab);
    } catch (const ConfigError& e) {
      return std::string(e.what()) + " | " + e.hint();
    }
    return std::string();
  };
  EXPECT_NE(problems(6).find("data.required_tokens: '<mask>' has id 6, past model.vocab_size 6"), std::string::npos)
      << problems(6);
  EXPECT_NE(problems(2).find("the tokenizer's EOS token has id 2, past model.vocab_size 2"), std::string::npos)
      << problems(2);
  data.required_tokens = "<2xx>";
  EXPECT_NE(problems(600).find("'<2xx>' is not a token of"), std::string::npos) << problems(600);
  EXPECT_NE(problems(600).find("--user-defined-symbols"), std::string::npos) << problems(600);
  EXPECT_EQ(make_tokenizer(data)->vocab_size(), 600);
}

}  // namespace
}  // namespace foldtron::testing
