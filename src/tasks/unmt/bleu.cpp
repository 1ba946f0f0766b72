// BLEU and chrF as sacreBLEU 2.6 computes them (see bleu.h).
#include "tasks/unmt/bleu.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <unordered_map>

#include <fmt/format.h>

#if FOLDTRON_HAVE_ICU
#include <unicode/uchar.h>
#include <unicode/ustring.h>
#endif

#include "core/errors.h"
#include "tasks/utf8.h"

namespace foldtron {
namespace {

constexpr int kMaxOrder = 4;
constexpr int kCharOrder = 6;
constexpr double kBeta = 2;

// ---- UTF-8 <-> code points ----

std::u32string decode_utf8(const std::string& text) {
  std::u32string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    const auto byte = static_cast<unsigned char>(text[i]);
    const int length = byte < 0x80 ? 1 : (byte >> 5) == 6 ? 2 : (byte >> 4) == 14 ? 3 : (byte >> 3) == 30 ? 4 : 0;
    char32_t c = length == 1 ? byte : length == 2 ? byte & 0x1f : length == 3 ? byte & 0x0f : byte & 0x07;
    bool valid = length > 0 && i + static_cast<size_t>(length) <= text.size();
    for (int k = 1; valid && k < length; ++k) {
      const auto next = static_cast<unsigned char>(text[i + static_cast<size_t>(k)]);
      valid = (next & 0xc0) == 0x80;
      c = (c << 6) | (next & 0x3f);
    }
    if (!valid) {
      throw DataError(fmt::format("the text is not valid UTF-8 (byte {} of '{}')", i, text.substr(0, 60)),
                      "convert the files to UTF-8 (iconv -f LATIN1 -t UTF-8)");
    }
    out.push_back(c);
    i += static_cast<size_t>(length);
  }
  return out;
}

std::string encode_utf8(const std::u32string& text) {
  std::string out;
  out.reserve(text.size());
  for (char32_t c : text) append_utf8(out, c);
  return out;
}

// Python's str.isspace().
bool is_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f || c == 0x205f || c == 0x3000;
}

// Python's str.split(): the words between runs of whitespace.
std::vector<std::u32string> split_words(const std::u32string& text) {
  std::vector<std::u32string> words;
  std::u32string word;
  for (char32_t c : text) {
    if (is_space(c)) {
      if (!word.empty()) words.push_back(std::move(word));
      word.clear();
    } else {
      word.push_back(c);
    }
  }
  if (!word.empty()) words.push_back(std::move(word));
  return words;
}

std::u32string join_words(const std::vector<std::u32string>& words) {
  std::u32string out;
  for (const std::u32string& w : words) {
    if (!out.empty()) out.push_back(U' ');
    out += w;
  }
  return out;
}

// ---- character classes ----

bool is_ascii_digit(char32_t c) { return c >= U'0' && c <= U'9'; }

enum class UnicodeClass { kNumber, kPunctuation, kSymbol, kOther };

UnicodeClass unicode_class(char32_t c) {
#if FOLDTRON_HAVE_ICU
  switch (u_charType(static_cast<UChar32>(c))) {
    case U_DECIMAL_DIGIT_NUMBER:
    case U_LETTER_NUMBER:
    case U_OTHER_NUMBER:
      return UnicodeClass::kNumber;
    case U_DASH_PUNCTUATION:
    case U_START_PUNCTUATION:
    case U_END_PUNCTUATION:
    case U_CONNECTOR_PUNCTUATION:
    case U_OTHER_PUNCTUATION:
    case U_INITIAL_PUNCTUATION:
    case U_FINAL_PUNCTUATION:
      return UnicodeClass::kPunctuation;
    case U_MATH_SYMBOL:
    case U_CURRENCY_SYMBOL:
    case U_MODIFIER_SYMBOL:
    case U_OTHER_SYMBOL:
      return UnicodeClass::kSymbol;
    default:
      return UnicodeClass::kOther;
  }
#else
  (void)c;
  throw UsageError("this foldtron was built without ICU, which the intl tokenizer needs",
                   "install libicu-dev and rebuild (scripts/setup.sh, scripts/build.sh), or use --tokenize 13a");
#endif
}

// One pass of a two-character substitution as Python's re.sub makes it: at each position from
// the left, where `first` holds for this character and `second` for the next, both are written
// with spaces (`before`: " a b", else "a b ") and the search goes on after them.
template <typename First, typename Second>
std::u32string separate_pairs(const std::u32string& text, First first, Second second, bool before) {
  std::u32string out;
  out.reserve(text.size() + text.size() / 4);
  for (size_t i = 0; i < text.size();) {
    if (i + 1 < text.size() && first(text[i]) && second(text[i + 1])) {
      if (before) out.push_back(U' ');
      out.push_back(text[i]);
      out.push_back(U' ');
      out.push_back(text[i + 1]);
      if (!before) out.push_back(U' ');
      i += 2;
    } else {
      out.push_back(text[i++]);
    }
  }
  return out;
}

// Every character for which `match` holds becomes " c ".
template <typename Match>
std::u32string separate_each(const std::u32string& text, Match match) {
  std::u32string out;
  out.reserve(text.size() + text.size() / 4);
  for (char32_t c : text) {
    if (match(c)) {
      out.push_back(U' ');
      out.push_back(c);
      out.push_back(U' ');
    } else {
      out.push_back(c);
    }
  }
  return out;
}

void replace_all(std::string& text, const std::string& from, const std::string& to) {
  for (size_t at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size())) {
    text.replace(at, from.size(), to);
  }
}

// ---- n-gram statistics ----

// N-grams of orders 1..max_order keyed by their words joined with a separator no word holds, and
// the number of words.
struct Ngrams {
  std::vector<std::unordered_map<std::u32string, int64_t>> by_order;
  int64_t length = 0;
};

Ngrams word_ngrams(const std::string& tokenized) {
  const std::vector<std::u32string> words = split_words(decode_utf8(tokenized));
  Ngrams out;
  out.by_order.resize(kMaxOrder);
  out.length = static_cast<int64_t>(words.size());
  for (size_t n = 1; n <= static_cast<size_t>(kMaxOrder); ++n) {
    for (size_t i = 0; i + n <= words.size(); ++i) {
      std::u32string key = words[i];
      for (size_t k = 1; k < n; ++k) key += U'\x01' + words[i + k];
      ++out.by_order[n - 1][key];
    }
  }
  return out;
}

std::vector<std::unordered_map<std::u32string, int64_t>> char_ngrams(const std::string& text) {
  std::u32string chars;
  for (char32_t c : decode_utf8(text)) {
    if (!is_space(c)) chars.push_back(c);
  }
  std::vector<std::unordered_map<std::u32string, int64_t>> out(kCharOrder);
  for (size_t n = 1; n <= static_cast<size_t>(kCharOrder); ++n) {
    for (size_t i = 0; i + n <= chars.size(); ++i) ++out[n - 1][chars.substr(i, n)];
  }
  return out;
}

// The references of segment i (an empty line is a reference of no words, as in sacreBLEU).
std::vector<std::string> segment_references(const std::vector<std::vector<std::string>>& references, size_t i) {
  std::vector<std::string> out;
  for (const auto& stream : references) out.push_back(stream[i]);
  return out;
}

void check_streams(size_t hypotheses, const std::vector<std::vector<std::string>>& references) {
  if (references.empty()) throw UsageError("no reference", "give one or more --ref files");
  for (size_t r = 0; r < references.size(); ++r) {
    if (references[r].size() != hypotheses) {
      throw DataError(fmt::format("reference {} has {} lines, but there are {} hypotheses", r + 1,
                                  references[r].size(), hypotheses),
                      "the hypotheses and every reference need one line per segment");
    }
  }
}

std::string strip_right(const std::string& text) {
  std::u32string chars = decode_utf8(text);
  while (!chars.empty() && is_space(chars.back())) chars.pop_back();
  return encode_utf8(chars);
}

std::string preprocess_for_bleu(const std::string& segment, const BleuOptions& options) {
  const std::string text = strip_right(options.lowercase ? lowercase_text(segment) : segment);
  if (options.tokenize == "13a") return tokenize_13a(text);
  if (options.tokenize == "intl") return tokenize_intl(text);
  return text;
}

double smoothing_default(const std::string& method) {
  if (method == "floor") return 0.1;
  if (method == "add-k") return 1;
  return 0;
}

std::string bleu_signature(int64_t refs, const BleuOptions& options) {
  std::string smooth = options.smooth_method;
  if (options.smooth_method == "floor" || options.smooth_method == "add-k") {
    smooth += fmt::format("[{:.2f}]", options.smooth_value.value_or(smoothing_default(options.smooth_method)));
  }
  return fmt::format("nrefs:{}|case:{}|eff:{}|tok:{}|smooth:{}|version:{}", refs, options.lowercase ? "lc" : "mixed", options.effective_order ? "yes" : "no", options.tokenize,
                     smooth, kSacreBleuVersion);
}

void check_options(const BleuOptions& options) {
  if (options.tokenize != "13a" && options.tokenize != "intl" && options.tokenize != "none") {
    throw UsageError(fmt::format("unknown tokenizer '{}'", options.tokenize), "use 13a, intl or none");
  }
  const std::string& m = options.smooth_method;
  if (m != "exp" && m != "floor" && m != "add-k" && m != "none") {
    throw UsageError(fmt::format("unknown smoothing method '{}'", m), "use exp, floor, add-k or none");
  }
}

// sacreBLEU's compute_bleu from the summed statistics.
BleuScore bleu_from_statistics(std::vector<double> correct, std::vector<double> total, int64_t sys_len,
                               int64_t ref_len, const BleuOptions& options) {
  BleuScore s;
  s.sys_len = sys_len;
  s.ref_len = ref_len;
  s.bp = 1.0;
  if (sys_len < ref_len) s.bp = sys_len > 0 ? std::exp(1 - static_cast<double>(ref_len) / static_cast<double>(sys_len)) : 0;
  s.precisions.assign(kMaxOrder, 0.0);
  const bool any_correct = std::any_of(correct.begin(), correct.end(), [](double c) { return c != 0; });
  if (any_correct) {
    const double value = options.smooth_value.value_or(smoothing_default(options.smooth_method));
    double smooth_mteval = 1;
    int effective = kMaxOrder;
    for (int n = 1; n <= kMaxOrder; ++n) {
      const auto k = static_cast<size_t>(n - 1);
      if (options.smooth_method == "add-k" && n > 1) {
        correct[k] += value;
        total[k] += value;
      }
      if (total[k] == 0) break;
      if (options.effective_order) effective = n;
      if (correct[k] == 0) {
        if (options.smooth_method == "exp") {
          smooth_mteval *= 2;
          s.precisions[k] = 100.0 / (smooth_mteval * total[k]);
        } else if (options.smooth_method == "floor") {
          s.precisions[k] = 100.0 * value / total[k];
        }
      } else {
        s.precisions[k] = 100.0 * correct[k] / total[k];
      }
    }
    double log_sum = 0;
    for (int n = 0; n < effective; ++n) {
      const double p = s.precisions[static_cast<size_t>(n)];
      log_sum += p == 0 ? -9999999999.0 : std::log(p);
    }
    s.score = s.bp * std::exp(log_sum / effective);
  }
  s.counts = std::move(correct);
  s.totals = std::move(total);
  return s;
}

}  // namespace

std::string tokenize_13a(const std::string& input) {
  std::string line = input;
  replace_all(line, "<skipped>", "");
  replace_all(line, "-\n", "");
  replace_all(line, "\n", " ");
  if (line.find('&') != std::string::npos) {
    replace_all(line, "&quot;", "\"");
    replace_all(line, "&amp;", "&");
    replace_all(line, "&lt;", "<");
    replace_all(line, "&gt;", ">");
  }
  std::u32string text = decode_utf8(" " + line + " ");
  // mteval-v13a's punctuation: { | } ~ [ \ ] ^ _ ` space ! " # $ % & ( ) * + : ; < = > ? @ /
  text = separate_each(text, [](char32_t c) {
    return (c >= U'{' && c <= U'~') || (c >= U'[' && c <= U'`') || (c >= U' ' && c <= U'&') ||
           (c >= U'(' && c <= U'+') || (c >= U':' && c <= U'@') || c == U'/';
  });
  const auto period_or_comma = [](char32_t c) { return c == U'.' || c == U','; };
  const auto not_digit = [](char32_t c) { return !is_ascii_digit(c); };
  text = separate_pairs(text, not_digit, period_or_comma, false);  // unless preceded by a digit
  text = separate_pairs(text, period_or_comma, not_digit, true);   // unless followed by a digit
  text = separate_pairs(text, is_ascii_digit, [](char32_t c) { return c == U'-'; }, false);
  return encode_utf8(join_words(split_words(text)));
}

std::string tokenize_intl(const std::string& input) {
  std::u32string text = decode_utf8(input);
  const auto punctuation = [](char32_t c) { return unicode_class(c) == UnicodeClass::kPunctuation; };
  const auto not_number = [](char32_t c) { return unicode_class(c) != UnicodeClass::kNumber; };
  text = separate_pairs(text, not_number, punctuation, false);
  text = separate_pairs(text, punctuation, not_number, true);
  text = separate_each(text, [](char32_t c) { return unicode_class(c) == UnicodeClass::kSymbol; });
  return encode_utf8(join_words(split_words(text)));
}

std::string lowercase_text(const std::string& text) {
#if FOLDTRON_HAVE_ICU
  if (std::all_of(text.begin(), text.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; })) {
    std::string out = text;
    for (char& c : out) c = (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
    return out;
  }
  UErrorCode error = U_ZERO_ERROR;
  int32_t length = 0;
  u_strFromUTF8(nullptr, 0, &length, text.data(), static_cast<int32_t>(text.size()), &error);
  std::u16string wide(static_cast<size_t>(length), u'\0');
  error = U_ZERO_ERROR;
  u_strFromUTF8(reinterpret_cast<UChar*>(wide.data()), length, nullptr, text.data(), static_cast<int32_t>(text.size()),
                &error);
  std::u16string lower(wide.size() * 3 + 4, u'\0');
  error = U_ZERO_ERROR;
  const int32_t lower_length = u_strToLower(reinterpret_cast<UChar*>(lower.data()), static_cast<int32_t>(lower.size()),
                                            reinterpret_cast<const UChar*>(wide.data()), length, "", &error);
  std::string out(static_cast<size_t>(lower_length) * 3 + 4, '\0');
  int32_t out_length = 0;
  u_strToUTF8(out.data(), static_cast<int32_t>(out.size()), &out_length, reinterpret_cast<const UChar*>(lower.data()),
              lower_length, &error);
  if (U_FAILURE(error)) {
    throw DataError(fmt::format("cannot lowercase '{}': {}", text.substr(0, 60), u_errorName(error)),
                    "check that the text is valid UTF-8");
  }
  out.resize(static_cast<size_t>(out_length));
  return out;
#else
  (void)text;
  throw UsageError("this foldtron was built without ICU, which lowercasing needs",
                   "install libicu-dev and rebuild (scripts/setup.sh, scripts/build.sh)");
#endif
}

BleuScore corpus_bleu(const std::vector<std::string>& hypotheses,
                      const std::vector<std::vector<std::string>>& references, const BleuOptions& options) {
  check_options(options);
  check_streams(hypotheses.size(), references);
  std::vector<double> correct(kMaxOrder, 0), total(kMaxOrder, 0);
  int64_t sys_len = 0, ref_len = 0;
  for (size_t i = 0; i < hypotheses.size(); ++i) {
    // The references' n-grams, each at the largest count any reference has.
    std::vector<std::unordered_map<std::u32string, int64_t>> reference_ngrams(kMaxOrder);
    std::vector<int64_t> lengths;
    for (const std::string& reference : segment_references(references, i)) {
      const Ngrams ngrams = word_ngrams(preprocess_for_bleu(reference, options));
      lengths.push_back(ngrams.length);
      for (size_t n = 0; n < static_cast<size_t>(kMaxOrder); ++n) {
        for (const auto& [key, count] : ngrams.by_order[n]) {
          int64_t& best = reference_ngrams[n][key];
          best = std::max(best, count);
        }
      }
    }
    const Ngrams hypothesis = word_ngrams(preprocess_for_bleu(hypotheses[i], options));
    // The closest reference length, the shorter one on ties.
    int64_t closest = lengths.front();
    for (int64_t length : lengths) {
      const int64_t diff = std::abs(hypothesis.length - length), best = std::abs(hypothesis.length - closest);
      if (diff < best || (diff == best && length < closest)) closest = length;
    }
    sys_len += hypothesis.length;
    ref_len += closest;
    for (size_t n = 0; n < static_cast<size_t>(kMaxOrder); ++n) {
      for (const auto& [key, count] : hypothesis.by_order[n]) {
        total[n] += static_cast<double>(count);
        const auto it = reference_ngrams[n].find(key);
        if (it != reference_ngrams[n].end()) correct[n] += static_cast<double>(std::min(count, it->second));
      }
    }
  }
  BleuScore score = bleu_from_statistics(std::move(correct), std::move(total), sys_len, ref_len, options);
  score.signature = bleu_signature(static_cast<int64_t>(references.size()), options);
  return score;
}

BleuScore sentence_bleu(const std::string& hypothesis, const std::vector<std::string>& references,
                        const BleuOptions& options) {
  std::vector<std::vector<std::string>> streams;
  for (const std::string& reference : references) streams.push_back({reference});
  return corpus_bleu({hypothesis}, streams, options);
}

ChrfScore corpus_chrf(const std::vector<std::string>& hypotheses,
                      const std::vector<std::vector<std::string>>& references, bool lowercase) {
  check_streams(hypotheses.size(), references);
  // [hypothesis, reference, matched] n-grams per order, summed over the corpus.
  std::vector<double> stats(3 * kCharOrder, 0.0);
  const auto prepare = [&](const std::string& text) { return lowercase ? lowercase_text(text) : text; };
  const auto f_score = [](const std::vector<double>& s) {
    const double factor = kBeta * kBeta;
    double precision = 0, recall = 0;
    int effective = 0;
    for (int n = 0; n < kCharOrder; ++n) {
      const double hyp = s[3 * n], ref = s[3 * n + 1], match = s[3 * n + 2];
      if (hyp > 0 && ref > 0) {
        precision += match / hyp;
        recall += match / ref;
        ++effective;
      }
    }
    if (effective > 0) {
      precision /= effective;
      recall /= effective;
    }
    return precision + recall > 0 ? 100 * (1 + factor) * precision * recall / (factor * precision + recall) : 0.0;
  };
  for (size_t i = 0; i < hypotheses.size(); ++i) {
    const auto hypothesis = char_ngrams(prepare(hypotheses[i]));
    std::vector<double> best;
    double best_f = -1;
    for (const std::string& reference : segment_references(references, i)) {
      const auto ref = char_ngrams(prepare(reference));
      std::vector<double> s(3 * kCharOrder, 0.0);
      for (size_t n = 0; n < static_cast<size_t>(kCharOrder); ++n) {
        double hyp_count = 0, ref_count = 0, match = 0;
        for (const auto& [key, count] : hypothesis[n]) {
          hyp_count += static_cast<double>(count);
          const auto it = ref[n].find(key);
          if (it != ref[n].end()) match += static_cast<double>(std::min(count, it->second));
        }
        for (const auto& [key, count] : ref[n]) ref_count += static_cast<double>(count);
        s[3 * n] = ref[n].empty() ? 0 : hyp_count;  // no reference n-grams of this order: no hits counted
        s[3 * n + 1] = ref_count;
        s[3 * n + 2] = match;
      }
      const double f = f_score(s);
      if (f > best_f) {
        best_f = f;
        best = s;
      }
    }
    for (size_t k = 0; k < stats.size(); ++k) stats[k] += best[k];
  }
  ChrfScore score;
  score.score = f_score(stats);
  score.signature = fmt::format("nrefs:{}|case:{}|eff:yes|nc:{}|nw:0|space:no|version:{}", references.size(),
                                lowercase ? "lc" : "mixed",
                                kCharOrder, kSacreBleuVersion);
  return score;
}

std::string bleu_report(const BleuScore& s) {
  std::string precisions;
  for (size_t n = 0; n < s.precisions.size(); ++n) precisions += fmt::format("{}{:.1f}", n ? "/" : "", s.precisions[n]);
  const double ratio = s.ref_len > 0 ? static_cast<double>(s.sys_len) / static_cast<double>(s.ref_len) : 0;
  return fmt::format("BLEU = {:.2f} {} (BP = {:.3f} ratio = {:.3f} hyp_len = {} ref_len = {})", s.score, precisions,
                     s.bp, ratio, s.sys_len, s.ref_len);
}

}  // namespace foldtron
