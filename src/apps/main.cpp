// foldtron: one binary, one subcommand per mode. Parses the command line and runs the
// subcommand under run_guarded: user errors (typed foldtron errors, bad flags) print the message
// and a hint and exit 2, internal errors exit 1, and under MPI a failing rank ends the job.
#include <iostream>
#include <map>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "apps/cli_options.h"
#include "apps/commands.h"
#include "core/errors.h"
#include "core/log.h"
#include "core/text.h"
#include "parallel/mpi_runtime.h"

int main(int argc, char** argv) {
  using namespace foldtron;
  CLI::App app("foldtron: Mixture-of-Experts Transformer training with five-dimensional parallelism "
               "and MoE Parallel Folding",
               "foldtron");
  app.require_subcommand(1);
  app.set_version_flag("--version", FOLDTRON_VERSION);
  std::string log_level = "info";
  CLI::Option* log_level_flag =
      app.add_option("--log-level", log_level, "debug, info, warning or error (before or after the command)")
          ->capture_default_str();
  // Subcommands (which inherit this) pass root options like --log-level up to the root.
  app.fallthrough();
  std::map<std::string, cli::Runner> runners{
      {"topology", cli::register_topology(app)},
      {"config", cli::register_config(app)},
      {"info", cli::register_info(app)},
      {"train", cli::register_train(app)},
      {"forward", cli::register_forward(app)},
      {"generate", cli::register_generate(app)},
      {"convert", cli::register_convert(app)},
      {"tokenizer", cli::register_tokenizer(app)},
      {"preprocess", cli::register_preprocess(app)},
      {"eval", cli::register_eval(app)},
      {"plot", cli::register_plot(app)},
      {"bleu", cli::register_bleu(app)},
      {"unmt", cli::register_unmt(app)},
      {"translate", cli::register_translate(app)},
      {"discourse", cli::register_discourse(app)},
      {"plan", cli::register_plan(app)},
  };
  app.footer("Run 'foldtron <command> --help' for a command's options.");

  return run_guarded([&]() -> int {
    // A misspelled subcommand gets a suggestion rather than CLI11's generic complaint.
    if (argc > 1 && argv[1][0] != '-' && argv[1][0] != '\0' && runners.count(argv[1]) == 0) {
      std::vector<std::string> names;
      for (const auto& [name, runner] : runners) names.push_back(name);
      throw UsageError(fmt::format("unknown command '{}'", argv[1]),
                       suggest(argv[1], names) + " (run 'foldtron --help')");
    }
    try {
      app.parse(argc, argv);
    } catch (const CLI::CallForHelp&) {
      std::cout << app.help();
      return 0;
    } catch (const CLI::CallForAllHelp&) {
      std::cout << app.help("", CLI::AppFormatMode::All);
      return 0;
    } catch (const CLI::CallForVersion&) {
      std::cout << FOLDTRON_VERSION << "\n";
      return 0;
    } catch (const CLI::ParseError& e) {
      const std::vector<CLI::App*> parsed = app.get_subcommands();
      const std::string command = parsed.empty() ? "foldtron" : "foldtron " + parsed.front()->get_name();
      throw UsageError(e.what(), fmt::format("run '{} --help' for the valid options", command));
    }
    log::set_level(log::parse_level(log_level));
    // Commands that read a config take it as logging.level, above the config's own.
    if (log_level_flag->count() > 0) cli::set_log_level_flag(log_level);
    return runners.at(app.get_subcommands().front()->get_name())();
  });
}
