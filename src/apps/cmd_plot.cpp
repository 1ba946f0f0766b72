// `foldtron plot`: draw metrics files as SVG (training/plot.h).
//   foldtron plot metrics.jsonl [other.jsonl ...] -o loss.svg [--title T]
#include <memory>

#include <fmt/format.h>

#include "apps/commands.h"
#include "core/errors.h"
#include "core/files.h"
#include "core/log.h"
#include "training/plot.h"

namespace foldtron::cli {
namespace {

struct PlotFlags {
  std::vector<std::string> inputs;
  std::string output, title;
};

}  // namespace

Runner register_plot(CLI::App& root) {
  auto flags = std::make_shared<PlotFlags>();
  CLI::App* app = root.add_subcommand("plot", "draw metrics files (loss, validation loss, learning rate, throughput) "
                                              "as an SVG image");
  app->add_option("metrics", flags->inputs, "metrics files written by foldtron train --metrics-file (one colour per file)")
      ->required();
  app->add_option("-o,--output", flags->output, "the image to write (.svg)")->required();
  app->add_option("--title", flags->title, "title above the panels (default: the files' names)");
  return [flags]() {
    const std::string& out = flags->output;
    if (out.size() < 4 || out.compare(out.size() - 4, 4, ".svg") != 0) {
      throw UsageError(fmt::format("cannot write '{}': foldtron draws SVG only", out),
                       "name the output .svg (browsers and image viewers open it; rsvg-convert or inkscape turn it "
                       "into PNG)");
    }
    std::vector<MetricsRun> runs;
    std::string names;
    for (const std::string& path : flags->inputs) {
      runs.push_back(read_metrics_file(path));
      names += (names.empty() ? "" : ", ") + path;
    }
    write_file_atomically(out, metrics_svg(runs, flags->title.empty() ? names : flags->title));
    log::info("plot", "wrote {} ({} run{})", out, runs.size(), runs.size() > 1 ? "s" : "");
    return 0;
  };
}

}  // namespace foldtron::cli
