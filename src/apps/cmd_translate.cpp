// `foldtron translate`: translation with a checkpoint of the translation task (DESIGN.md's
// contract), alone or under mpirun (tp, dp, pp flags):
//   foldtron translate --load CKPT --src-lang en --tgt-lang de [--num-beams N] [--batch-size N]
//       [--max-len-a A --max-len-b B] [--length-penalty X] [--set data.tokenizer_model=P] < IN > OUT
// reads lines on rank 0's standard input and writes one detokenized line per input line. The
// model, tokenizer and languages are the checkpoint's config (--set adjusts them, e.g. a moved
// tokenizer model).
#include <algorithm>
#include <iostream>
#include <memory>

#include <fmt/format.h>

#include "apps/cli_options.h"
#include "apps/commands.h"
#include "checkpoint/distributed.h"
#include "config/validate.h"
#include "core/errors.h"
#include "core/log.h"
#include "data/tokenizer.h"
#include "parallel/mpi_runtime.h"
#include "parallel/process_groups.h"
#include "tasks/unmt/translate.h"
#include "training/checkpointing.h"
#include "training/train_state.h"

namespace foldtron::cli {
namespace {

struct TranslateFlags {
  ConfigOptions config;
  std::string load, device = "auto";
  TranslateOptions options;
};

}  // namespace

Runner register_translate(CLI::App& root) {
  auto flags = std::make_shared<TranslateFlags>();
  CLI::App* app = root.add_subcommand("translate", "translate standard input line by line with a translation checkpoint");
  app->add_option("--load", flags->load, "checkpoint (a save folder, or one iter_* folder) of the translation task")
      ->required();
  app->add_option("--src-lang", flags->options.source_language, "language of the input (one of translation.languages)")
      ->required();
  app->add_option("--tgt-lang", flags->options.target_language, "language to translate into")->required();
  app->add_option("--num-beams", flags->options.num_beams, "beam search with this many beams (1: greedy)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app->add_option("--batch-size", flags->options.batch_size, "sentences decoded together")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app->add_option("--max-len-a", flags->options.max_len_a, "at most a * source tokens + b new tokens")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app->add_option("--max-len-b", flags->options.max_len_b, "the b of a * source tokens + b")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app->add_option("--length-penalty", flags->options.length_penalty, "beam scores are divided by length ** this")
      ->capture_default_str();
  flags->config.add_to(*app);
  add_device_option(*app, flags->device);
  app->footer(environment_help());
  return [flags]() {
    MpiRuntime mpi(nullptr, nullptr);
    return run_guarded([&]() -> int {
      Config config =
          flags->config.load_over(checkpoint_config(flags->load), {"checkpoint.load=" + yaml_quoted(flags->load)});
      // The training batch does not apply: one sequence per data-parallel rank passes validation
      // in any layout.
      const ParallelConfig& p = config.parallel;
      config.train.micro_batch_size = 1;
      config.train.global_batch_size = std::max<int64_t>(1, mpi.size() / std::max<int64_t>(1, p.tp * p.cp * p.pp));
      log::set_level(config.logging.level);
      if (!config.model.encoder_decoder() || !config.translation.enabled()) {
        throw CheckpointError(fmt::format("'{}' is not a checkpoint of the translation task (model '{}'{})", flags->load,
                                          enum_name(config.model.architecture),
                                          config.translation.enabled() ? "" : ", no translation.data"),
                              "pass a checkpoint that foldtron train saved with a translation section");
      }
      validate_config(config, mpi.size());
      const std::unique_ptr<TextTokenizer> tokenizer = make_tokenizer(config.data);
      const bool cuda = use_cuda(flags->device);
      const Topology topology(layout_of(config.parallel, mpi.size()));
      ProcessGroups groups(topology, make_comm_options(config.parallel, cuda));
      TrainState state(config, groups, rank_device(cuda, config.parallel));
      Checkpointer(state).load(config.checkpoint.load);
      // Rank 0 reads the input; every rank decodes the same lines.
      std::string text;
      if (mpi.rank() == 0) {
        for (std::string line; std::getline(std::cin, line);) text += line + "\n";
      }
      text = broadcast_string(groups.world(), text);
      std::vector<std::string> lines;
      for (size_t start = 0; start < text.size();) {
        const size_t end = text.find('\n', start);
        lines.push_back(text.substr(start, end - start));
        start = end + 1;
      }
      const std::vector<std::string> out =
          translate_lines(*state.model, groups, *tokenizer, config, lines, flags->options);
      if (mpi.rank() == 0) {
        for (const std::string& line : out) std::cout << line << "\n";
        std::cout.flush();
      }
      log::info("translate", "{} lines {} -> {}", lines.size(), flags->options.source_language,
                flags->options.target_language);
      return 0;
    });
  };
}

}  // namespace foldtron::cli
