// `foldtron eval`: the validation (and test) loss of a checkpoint, on the data its config names.
//   mpirun -np 4 foldtron eval --config run.yaml --load ckpt [--eval-iters N]
// prints one JSON line per split on rank 0: {"step", "val_loss", "val_ppl", ...} (DESIGN.md's
// metrics records), in any layout that holds the model.
#include <cmath>
#include <iostream>
#include <memory>

#include <fmt/format.h>

#include "apps/cli_options.h"
#include "apps/commands.h"
#include "tasks/tasks.h"
#include "config/validate.h"
#include "core/log.h"
#include "parallel/mpi_runtime.h"
#include "parallel/process_groups.h"
#include "training/trainer.h"

namespace foldtron::cli {
namespace {

struct EvalFlags {
  ConfigOptions config;
  std::string load, eval_iters, device = "auto";
};

}  // namespace

Runner register_eval(CLI::App& root) {
  auto flags = std::make_shared<EvalFlags>();
  CLI::App* app = root.add_subcommand("eval", "validation and test loss of a checkpoint (launch with mpirun for "
                                              "several ranks)");
  flags->config.add_to(*app);
  app->add_option("--load", flags->load, "save folder (its latest checkpoint) or checkpoint folder")->required();
  app->add_option("--eval-iters", flags->eval_iters, "global batches of each split to read (train.eval_iters)");
  add_device_option(*app, flags->device);
  app->footer(environment_help());
  return [flags]() {
    MpiRuntime mpi(nullptr, nullptr);
    return run_guarded([&]() -> int {
      std::vector<std::string> overrides{"checkpoint.load=" + yaml_quoted(flags->load)};
      if (!flags->eval_iters.empty()) overrides.push_back("train.eval_iters=" + flags->eval_iters);
      const Config config = flags->config.load(overrides);
      log::set_level(config.logging.level);
      validate_config(config, mpi.size());
      const bool cuda = use_cuda(flags->device);
      const Topology topology(layout_of(config.parallel, mpi.size()));
      ProcessGroups groups(topology, make_comm_options(config.parallel, cuda));
      const std::vector<EvalRecord> records = evaluate_checkpoint(config, groups, rank_device(cuda, config.parallel), task_factory(config));
      for (const EvalRecord& record : records) {
        log::info("eval", "{} split after step {}: loss {:.4f} | perplexity {:.3f} | {} samples, {:.0f} tokens, "
                          "{:.2f} s",
                  record.split, record.step, record.loss, std::exp(record.loss), record.samples, record.units,
                  record.seconds);
        if (mpi.rank() == 0) std::cout << metrics_json(record) << std::endl;
      }
      return 0;
    });
  };
}

}  // namespace foldtron::cli
