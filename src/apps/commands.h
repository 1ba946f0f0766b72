// The foldtron subcommands. Each register_* adds its CLI11 subcommand to the root app and returns
// the function that runs it once parsing has succeeded (its return value is the exit code).
#pragma once

#include <functional>

#include <CLI/CLI.hpp>

namespace foldtron::cli {

using Runner = std::function<int()>;

Runner register_topology(CLI::App& root);
Runner register_config(CLI::App& root);
Runner register_info(CLI::App& root);
Runner register_train(CLI::App& root);
Runner register_forward(CLI::App& root);
Runner register_generate(CLI::App& root);
Runner register_convert(CLI::App& root);
Runner register_tokenizer(CLI::App& root);
Runner register_preprocess(CLI::App& root);
Runner register_eval(CLI::App& root);
Runner register_plot(CLI::App& root);
Runner register_bleu(CLI::App& root);
Runner register_unmt(CLI::App& root);
Runner register_translate(CLI::App& root);
Runner register_discourse(CLI::App& root);
Runner register_plan(CLI::App& root);

}  // namespace foldtron::cli
