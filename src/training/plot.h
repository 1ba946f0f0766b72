// Plots of metrics files (training/metrics.h) as SVG, drawn here so no Python or plotting library
// is needed: panels of the training loss with the validation loss, the learning rate, the
// throughput (tokens/s) and the gradient norm against the step, one colour per run.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace foldtron {

struct MetricsRun {
  std::string label;                  // shown in the legend (the file name)
  std::vector<nlohmann::json> records;  // the file's lines, as written (step and eval records)
};

// Reads a metrics file; DataError naming the file and line of a line that is not a JSON object.
MetricsRun read_metrics_file(const std::string& path);

// The SVG document. DataError when no run has a step record.
std::string metrics_svg(const std::vector<MetricsRun>& runs, const std::string& title);

}  // namespace foldtron
