// Corpus BLEU and chrF with sacreBLEU 2.6's semantics, so our scores equal the ones papers report:
//   BLEU: segments lowercased (optionally) and tokenized (13a: mteval-v13a's rules, the default;
//         intl: mteval-v14's Unicode punctuation and symbol rules; none), word n-grams up to 4
//         clipped by the largest count in any reference, the closest reference length (the
//         shorter on ties) for the brevity penalty, smoothing exp (NIST, the default), floor,
//         add-k or none, and for sentence BLEU the effective order;
//   chrF: character n-grams up to 6 without whitespace, beta 2, statistics summed over the
//         corpus, precision and recall averaged over the orders both sides have.
// Each score carries sacreBLEU's signature string ("nrefs:1|case:mixed|eff:no|tok:13a|...").
// Text is UTF-8; whitespace and lowercasing follow Python's str.split() and str.lower(), the
// intl tokenizer's character classes Unicode's general categories (ICU).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace foldtron {

// The sacreBLEU version whose semantics (and signature) these scores reproduce.
constexpr const char* kSacreBleuVersion = "2.6.0";

struct BleuOptions {
  std::string tokenize = "13a";       // 13a, intl or none
  bool lowercase = false;
  std::string smooth_method = "exp";  // exp, floor, add-k or none
  std::optional<double> smooth_value;  // floor: 0.1, add-k: 1 when not given
  bool effective_order = false;        // sentence BLEU
};

struct BleuScore {
  double score = 0;  // 0..100
  std::vector<double> counts, totals;  // matched and hypothesis n-grams per order (add-k adds k past order 1)
  std::vector<double> precisions;      // percent
  int64_t sys_len = 0, ref_len = 0;
  double bp = 0;
  std::string signature;
};

struct ChrfScore {
  double score = 0;  // 0..100
  std::string signature;
};

// `references`: one or more streams, each a line per hypothesis (an empty line is a reference of
// no words). DataError when a stream's length differs from the hypotheses' or the text is not
// UTF-8; UsageError for an unknown tokenizer or smoothing method.
BleuScore corpus_bleu(const std::vector<std::string>& hypotheses,
                      const std::vector<std::vector<std::string>>& references, const BleuOptions& options = {});
// One segment with its references (sacreBLEU's sentence_bleu sets options.effective_order).
BleuScore sentence_bleu(const std::string& hypothesis, const std::vector<std::string>& references,
                        const BleuOptions& options);
ChrfScore corpus_chrf(const std::vector<std::string>& hypotheses,
                      const std::vector<std::vector<std::string>>& references, bool lowercase = false);

// The tokenizers, for tests and tools: the tokenized text, tokens separated by single spaces.
std::string tokenize_13a(const std::string& text);
std::string tokenize_intl(const std::string& text);
// Python's str.lower() on UTF-8 text.
std::string lowercase_text(const std::string& text);

// sacreBLEU's one-line report: "BLEU = 43.20 72.5/42.2/26.9/17.0 (BP = 0.882 ratio = 0.889
// hyp_len = 3602 ref_len = 4054)".
std::string bleu_report(const BleuScore& score);

}  // namespace foldtron
