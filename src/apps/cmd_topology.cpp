// `foldtron topology`: the MoE Parallel Folding rank layout and process groups of a world size,
// as a table or as DESIGN.md's JSON contract. Pure arithmetic, no MPI.
#include <iostream>
#include <memory>

#include "apps/cli_options.h"
#include "apps/commands.h"
#include "config/layout.h"
#include "core/log.h"
#include "parallel/topology.h"

namespace foldtron::cli {

Runner register_topology(CLI::App& root) {
  struct Options {
    ParallelLayout layout;
    bool json = false;
  };
  auto options = std::make_shared<Options>();
  CLI::App* app = root.add_subcommand("topology", "print the folded rank layout and process groups of a world size");
  app->add_option("--world", options->layout.world, "number of ranks")->required()->check(CLI::PositiveNumber);
  app->add_option("--tp", options->layout.tp, "tensor-parallel size")->capture_default_str();
  app->add_option("--cp", options->layout.cp, "context-parallel size")->capture_default_str();
  app->add_option("--pp", options->layout.pp, "pipeline-parallel size")->capture_default_str();
  app->add_option("--ep", options->layout.ep, "expert-parallel size")->capture_default_str();
  app->add_option("--etp", options->layout.etp, "expert tensor-parallel size")->capture_default_str();
  app->add_option("--order", options->layout.order, "rank order of the axes, fastest first")->capture_default_str();
  app->add_flag("--json", options->json, "print the groups as JSON (DESIGN.md contract)");
  app->footer(environment_help());
  return [options]() {
    const Topology topology(options->layout);
    std::cout << (options->json ? topology.to_json() + "\n" : topology.to_table());
    std::vector<ConfigProblem> problems;
    check_layout_trainable(options->layout, problems);
    for (const ConfigProblem& problem : problems) {
      log::warning("topology", "this layout cannot train: {} (hint: {})", problem.message, problem.hint);
    }
    return 0;
  };
}

}  // namespace foldtron::cli
