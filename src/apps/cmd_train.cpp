// `foldtron train`: validate the config on every rank, start MPI and the process groups, train,
// and (with --generate N) print a continuation of --prompt. Launched like any MPI job:
//   mpirun -np 4 foldtron train --preset demo --save ckpt --save-interval 100
// and resumed, in this layout or any other, with --load ckpt.
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>

#include <fmt/format.h>
#include <torch/torch.h>

#include "apps/cli_options.h"
#include "apps/commands.h"
#include "tasks/tasks.h"
#include "checkpoint/model_state.h"
#include "config/validate.h"
#include "core/errors.h"
#include "core/log.h"
#include "core/torch_compat.h"
#include "parallel/mpi_runtime.h"
#include "parallel/process_groups.h"
#include "training/trainer.h"

namespace foldtron::cli {
namespace {

struct TrainFlags {
  ConfigOptions config;
  std::vector<std::pair<std::string, std::string>> values;  // (config key, flag value)
  std::vector<CLI::Option*> options;
  std::string device = "auto";
};

// validate_config, and when a checkpoint is to be loaded into a layout that cannot hold the
// model, the layout it was saved under too.
void validate_train_config(const Config& config, int64_t world) {
  std::vector<ConfigProblem> problems = check_config(config, world);
  if (problems.empty()) return;
  const std::string saved = config.checkpoint.load.empty() ? "" : saved_layout_text(config.checkpoint.load);
  if (!saved.empty()) {
    problems.push_back({"checkpoint.load",
                        fmt::format("'{}' was saved under {}; it loads into any layout that holds the model, but "
                                    "not into {}",
                                    config.checkpoint.load, saved, layout_text(layout_json(config.parallel, world))),
                        "choose a layout without the problems above (the saved one always works)"});
  }
  throw ConfigError(std::move(problems));
}

}  // namespace

Runner register_train(CLI::App& root) {
  auto flags = std::make_shared<TrainFlags>();
  CLI::App* app = root.add_subcommand("train", "train a model (launch with mpirun/srun for several ranks)");
  flags->config.add_to(*app);
  // The common training flags are --set train.<key> / logging.<key> under their usual names.
  const std::vector<std::tuple<std::string, std::string, std::string>> table{
      {"--train-iters", "train.train_iters", "optimizer steps"},
      {"--global-batch-size", "train.global_batch_size", "sequences per step over all dp ranks"},
      {"--micro-batch-size", "train.micro_batch_size", "sequences per forward/backward"},
      {"--seq-length", "train.seq_length", "tokens per sequence"},
      {"--seed", "train.seed", "seed of initialization, data order and dropout"},
      {"--log-interval", "logging.log_interval", "steps between progress lines"},
      {"--metrics-file", "logging.metrics_file", "JSONL file with one record per logged step"},
      {"--prompt", "logging.sample_prompt", "prompt of the continuation printed after training"},
      {"--generate", "logging.sample_tokens", "tokens of continuation to print after training (0: none)"},
      {"--save", "checkpoint.save", "folder to save checkpoints into (at the end, every --save-interval steps, on "
                                    "SIGTERM/SIGINT)"},
      {"--save-interval", "checkpoint.save_interval", "steps between checkpoints (0: only at the end)"},
      {"--load", "checkpoint.load", "save folder (its latest checkpoint) or checkpoint to resume or start from"},
  };
  flags->values.reserve(table.size());
  for (const auto& [flag, key, doc] : table) {
    flags->values.emplace_back(key, "");
    flags->options.push_back(app->add_option(flag, flags->values.back().second, doc));
  }
  add_device_option(*app, flags->device);
  app->footer(environment_help());
  return [flags]() {
    MpiRuntime mpi(nullptr, nullptr);
    return run_guarded([&]() -> int {
      std::vector<std::string> overrides;
      for (size_t i = 0; i < flags->values.size(); ++i) {
        if (flags->options[i]->count() > 0) {
          // Text values go in YAML single quotes, so a prompt like "Note: x" stays one string.
          const std::string& key = flags->values[i].first;
          std::string value = flags->values[i].second;
          if (key == "logging.sample_prompt" || key == "logging.metrics_file" || key == "checkpoint.save" ||
              key == "checkpoint.load") {
            value = yaml_quoted(value);
          }
          overrides.push_back(key + "=" + value);
        }
      }
      const Config config = flags->config.load(overrides);
      log::set_level(config.logging.level);
      validate_train_config(config, mpi.size());  // every rank, before any communicator exists
      if (mpi.rank() == 0) {
        log::info("train", "resolved configuration:\n{}", config_to_yaml(config));
        if (!config.logging.run_dir.empty()) {
          std::filesystem::create_directories(config.logging.run_dir);
          std::ofstream(std::filesystem::path(config.logging.run_dir) / "config.yaml") << config_to_yaml(config);
        }
      }
      const bool cuda = use_cuda(flags->device);
      const Topology topology(layout_of(config.parallel, mpi.size()));
      ProcessGroups groups(topology, make_comm_options(config.parallel, cuda));
      TrainOptions options;
      options.device = rank_device(cuda, config.parallel);
      options.make_task = task_factory(config);
      options.keep_step_records = false;  // the metrics file has them; memory stays flat over a long job
      const TrainResult result = train(config, groups, options);
      if (mpi.rank() == 0 && !result.sample.empty()) {
        std::cout << fmt::format("\n--- {} continuation ---\n{}{}\n------------------------------\n",
                                 config.logging.sample_temperature > 0 ? "sampled" : "greedy",
                                 config.logging.sample_prompt, result.sample);
      }
      return 0;
    });
  };
}

}  // namespace foldtron::cli
