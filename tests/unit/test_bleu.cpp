// BLEU and chrF against sacreBLEU 2.6.0: every case of ../shared/reference/sacrebleu_cases.json
// (real English->German/French segments) with its five BLEU option sets (13a, lowercase, intl,
// none, floor smoothing), chrF2 and sentence BLEU with the effective order: scores within 1e-4,
// n-gram counts, totals and lengths exactly, signatures as sacreBLEU writes them. Also the
// tokenizers on hand-checked lines, and `foldtron bleu`.
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/errors.h"
#include "core/files.h"
#include "run_command.h"
#include "tasks/unmt/bleu.h"

namespace foldtron::testing {
namespace {
namespace fs = std::filesystem;

const std::string kCases = std::string(FOLDTRON_REFERENCE_DIR) + "/sacrebleu_cases.json";

nlohmann::json load_cases() {
  std::ifstream in(kCases);
  return nlohmann::json::parse(in);
}

BleuOptions options_of(const nlohmann::json& options) {
  BleuOptions o;
  o.lowercase = options.value("lowercase", false);
  o.tokenize = options.value("tokenize", std::string("13a"));
  o.smooth_method = options.value("smooth_method", std::string("exp"));
  if (options.contains("smooth_value")) o.smooth_value = options["smooth_value"].get<double>();
  return o;
}

std::vector<double> doubles(const nlohmann::json& values) { return values.get<std::vector<double>>(); }

TEST(SacreBleu, EveryReferenceCase) {
  if (!fs::exists(kCases)) GTEST_SKIP() << kCases << " is not here (../shared/reference is outside the repository)";
  const nlohmann::json reference = load_cases();
  ASSERT_EQ(reference["sacrebleu_version"], kSacreBleuVersion);
  int checked = 0;
  double worst = 0;
  for (size_t c = 0; c < reference["cases"].size(); ++c) {
    const nlohmann::json& item = reference["cases"][c];
    const auto hyps = item["hyps"].get<std::vector<std::string>>();
    const auto refs = item["refs"].get<std::vector<std::vector<std::string>>>();
    for (const nlohmann::json& expected : item["bleu"]) {
      const BleuScore got = corpus_bleu(hyps, refs, options_of(expected["options"]));
      const std::string what = fmt::format("case {} options {}", c, expected["options"].dump());
      EXPECT_NEAR(got.score, expected["score"].get<double>(), 1e-4) << what;
      worst = std::max(worst, std::abs(got.score - expected["score"].get<double>()));
      EXPECT_EQ(got.counts, doubles(expected["counts"])) << what;
      EXPECT_EQ(got.totals, doubles(expected["totals"])) << what;
      EXPECT_EQ(got.sys_len, expected["sys_len"].get<int64_t>()) << what;
      EXPECT_EQ(got.ref_len, expected["ref_len"].get<int64_t>()) << what;
      EXPECT_NEAR(got.bp, expected["bp"].get<double>(), 1e-12) << what;
      EXPECT_EQ(got.signature, expected["signature"].get<std::string>()) << what;
      ++checked;
    }
    const ChrfScore chrf = corpus_chrf(hyps, refs);
    EXPECT_NEAR(chrf.score, item["chrf"]["score"].get<double>(), 1e-4) << "chrF, case " << c;
    worst = std::max(worst, std::abs(chrf.score - item["chrf"]["score"].get<double>()));
    EXPECT_EQ(chrf.signature, item["chrf"]["signature"].get<std::string>());
    BleuOptions sentence;
    sentence.effective_order = true;
    const auto& scores = item["sentence_bleu"];
    for (size_t i = 0; i < scores.size(); ++i) {
      std::vector<std::string> segment_refs;
      for (const auto& stream : refs) segment_refs.push_back(stream[i]);
      const double got = sentence_bleu(hyps[i], segment_refs, sentence).score;
      EXPECT_NEAR(got, scores[i].get<double>(), 1e-4) << "sentence BLEU, case " << c << " segment " << i;
      worst = std::max(worst, std::abs(got - scores[i].get<double>()));
    }
  }
  EXPECT_EQ(checked, 24 * 5);
  std::cout << "sacreBLEU cases: " << checked << " BLEU scores, 24 chrF, worst difference " << worst << "\n";
}

TEST(SacreBleu, Tokenizers) {
  EXPECT_EQ(tokenize_13a("Hello, world. It costs $3.50 (or 1,000 yen)!"),
            "Hello , world . It costs $ 3.50 ( or 1,000 yen ) !");
  EXPECT_EQ(tokenize_13a("a &amp; b &lt;c&gt; 3-4 x-y <skipped>"), "a & b < c > 3 - 4 x-y");
  EXPECT_EQ(tokenize_13a("Grüße, «Köln»."), "Grüße , «Köln» .");
  EXPECT_EQ(tokenize_intl("Grüße, «Köln». 3,5 €"), "Grüße , « Köln » . 3,5 €");
  EXPECT_EQ(lowercase_text("ÄRGER Über İstanbul"), "ärger über i\xcc\x87stanbul");  // İ: i + combining dot, as Python
  EXPECT_THROW(tokenize_13a("bad \xff byte"), DataError);
}

TEST(SacreBleu, EdgeCasesAndErrors) {
  // No match at all: 0, as sacreBLEU returns early.
  EXPECT_EQ(corpus_bleu({"x y z"}, {{"a b c"}}).score, 0.0);
  // A perfect match of fewer than four words: 0 without the effective order, 100 with it.
  EXPECT_EQ(corpus_bleu({"a b"}, {{"a b"}}).score, 0.0);
  BleuOptions effective;
  effective.effective_order = true;
  EXPECT_NEAR(sentence_bleu("a b", {"a b"}, effective).score, 100.0, 1e-9);
  // Two references: each n-gram clipped by the larger count; the closer length (shorter on ties).
  const BleuScore two = corpus_bleu({"the cat the cat"}, {{"the cat"}, {"the the cat cat sat"}});
  EXPECT_EQ(two.counts[0], 4.0);
  EXPECT_EQ(two.ref_len, 5);
  EXPECT_EQ(two.signature, "nrefs:2|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0");
  try {
    corpus_bleu({"a", "b"}, {{"a"}});
    FAIL() << "no error for a short reference";
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find("reference 1 has 1 lines, but there are 2 hypotheses"), std::string::npos);
  }
  BleuOptions bad;
  bad.tokenize = "moses";
  EXPECT_THROW(corpus_bleu({"a"}, {{"a"}}, bad), UsageError);
}

TEST(SacreBleu, Cli) {
  const fs::path dir = fs::temp_directory_path() / fmt::format("foldtron_bleu_{}", ::getpid());
  fs::create_directories(dir);
  std::ofstream(dir / "ref.txt") << "The cat sat on the mat.\nIt is raining today.\n";
  std::ofstream(dir / "hyp.txt") << "The cat sat on a mat.\nIt rains today.\n";
  int code = -1;
  const std::string out = run_command(fmt::format("{} bleu --ref {} --json < {}", FOLDTRON_BINARY,
                                                  (dir / "ref.txt").string(), (dir / "hyp.txt").string()),
                                      &code);
  ASSERT_EQ(code, 0) << out;
  const nlohmann::json j = nlohmann::json::parse(out);
  const BleuScore expected = corpus_bleu({"The cat sat on a mat.", "It rains today."},
                                         {{"The cat sat on the mat.", "It is raining today."}});
  EXPECT_NEAR(j["score"].get<double>(), expected.score, 1e-12);
  EXPECT_EQ(j["counts"], nlohmann::json(std::vector<int64_t>(expected.counts.begin(), expected.counts.end())));
  EXPECT_EQ(j["signature"], "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0");
  const std::string chrf = run_command(fmt::format("{} bleu --chrf --ref {} < {}", FOLDTRON_BINARY,
                                                   (dir / "ref.txt").string(), (dir / "hyp.txt").string()),
                                       &code);
  EXPECT_EQ(code, 0) << chrf;
  EXPECT_EQ(chrf.rfind("chrF2|nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no|version:2.6.0 = ", 0), 0u) << chrf;
  const std::string mismatch = run_command(fmt::format("echo one | {} bleu --ref {} 2>&1", FOLDTRON_BINARY,
                                                       (dir / "ref.txt").string()),
                                           &code);
  EXPECT_EQ(code, 2) << mismatch;
  EXPECT_NE(mismatch.find("reference 1 has 2 lines, but there are 1 hypotheses"), std::string::npos) << mismatch;
  remove_tree(dir);
}

}  // namespace
}  // namespace foldtron::testing
