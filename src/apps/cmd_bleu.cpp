// `foldtron bleu`: corpus BLEU (or chrF) of the hypotheses on standard input against one or more
// reference files, as sacreBLEU 2.6 computes them (tasks/unmt/bleu.h).
//   foldtron bleu --ref REF.txt [--ref REF2.txt] [--tokenize 13a|intl|none] [--lowercase]
//                 [--smooth-method exp|floor|add-k|none] [--smooth-value X] [--chrf] [--json] < HYP.txt
#include <fstream>
#include <iostream>
#include <memory>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "apps/commands.h"
#include "core/errors.h"
#include "tasks/unmt/bleu.h"

namespace foldtron::cli {
namespace {

struct BleuFlags {
  std::vector<std::string> refs;
  BleuOptions options;
  double smooth_value = -1;
  bool chrf = false, json = false;
};

// Counts as sacreBLEU prints them: integers (add-k makes them fractional past order 1).
nlohmann::json numbers(const std::vector<double>& values) {
  nlohmann::json out = nlohmann::json::array();
  for (double v : values) {
    if (v == static_cast<double>(static_cast<int64_t>(v))) {
      out.push_back(static_cast<int64_t>(v));
    } else {
      out.push_back(v);
    }
  }
  return out;
}

std::vector<std::string> read_lines(std::istream& in) {
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

}  // namespace

Runner register_bleu(CLI::App& root) {
  auto flags = std::make_shared<BleuFlags>();
  CLI::App* app = root.add_subcommand("bleu", "BLEU or chrF of standard input against reference files, as sacreBLEU "
                                              "2.6 computes them");
  app->add_option("--ref", flags->refs, "reference file, a line per hypothesis (several: several references)")
      ->required();
  app->add_option("--tokenize", flags->options.tokenize, "13a, intl or none")
      ->capture_default_str()
      ->check(CLI::IsMember({"13a", "intl", "none"}));
  app->add_flag("--lowercase", flags->options.lowercase, "compare lowercased text");
  app->add_option("--smooth-method", flags->options.smooth_method, "exp, floor, add-k or none")
      ->capture_default_str()
      ->check(CLI::IsMember({"exp", "floor", "add-k", "none"}));
  app->add_option("--smooth-value", flags->smooth_value, "the value of floor (default 0.1) or add-k (default 1)");
  app->add_flag("--chrf", flags->chrf, "chrF2 (character 6-grams, beta 2) instead of BLEU");
  app->add_flag("--json", flags->json, "print a JSON object");
  return [flags]() {
    BleuOptions options = flags->options;
    if (flags->smooth_value >= 0) {
      if (options.smooth_method != "floor" && options.smooth_method != "add-k") {
        throw UsageError(fmt::format("--smooth-value applies to floor and add-k, not '{}'", options.smooth_method),
                         "add --smooth-method floor or add-k, or leave --smooth-value out");
      }
      options.smooth_value = flags->smooth_value;
    }
    std::vector<std::vector<std::string>> refs;
    for (const std::string& path : flags->refs) {
      std::ifstream in(path);
      if (!in) throw DataError(fmt::format("cannot read the reference file '{}'", path), "check the path");
      refs.push_back(read_lines(in));
    }
    const std::vector<std::string> hyps = read_lines(std::cin);
    if (flags->chrf) {
      const ChrfScore s = corpus_chrf(hyps, refs, options.lowercase);
      if (flags->json) {
        std::cout << nlohmann::json{{"score", s.score}, {"signature", s.signature}}.dump() << "\n";
      } else {
        std::cout << fmt::format("chrF2|{} = {:.2f}\n", s.signature, s.score);
      }
      return 0;
    }
    const BleuScore s = corpus_bleu(hyps, refs, options);
    if (flags->json) {
      nlohmann::ordered_json j{{"score", s.score},   {"counts", numbers(s.counts)}, {"totals", numbers(s.totals)},
                               {"sys_len", s.sys_len}, {"ref_len", s.ref_len}, {"bp", s.bp},
                               {"signature", s.signature}};
      std::cout << j.dump() << "\n";
    } else {
      std::cout << fmt::format("BLEU|{} = {}\n", s.signature, bleu_report(s).substr(7));
    }
    return 0;
  };
}

}  // namespace foldtron::cli
