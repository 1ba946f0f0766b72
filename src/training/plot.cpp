// SVG plots of metrics files (see plot.h).
#include "training/plot.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>

#include <fmt/format.h>

#include "core/errors.h"

namespace foldtron {
namespace {

constexpr double kWidth = 960, kPanelHeight = 250, kLeft = 80, kRight = 20, kTop = 40, kGap = 55;
const char* const kColours[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf"};

struct Series {
  std::string name;
  std::string colour;
  bool dashed = false;
  std::vector<std::pair<double, double>> points;  // (step, value), sorted by step
};

struct Panel {
  std::string title;
  std::vector<Series> series;
};

// Points of `key` from the records that have it (later records of a step replace earlier ones,
// as a resumed run rewrites them).
std::vector<std::pair<double, double>> points_of(const MetricsRun& run, const std::string& key) {
  std::map<double, double> by_step;
  for (const nlohmann::json& record : run.records) {
    const auto step = record.find("step");
    const auto value = record.find(key);
    if (step == record.end() || value == record.end() || !step->is_number() || !value->is_number()) continue;
    const double v = value->get<double>();
    if (std::isfinite(v)) by_step[step->get<double>()] = v;
  }
  return {by_step.begin(), by_step.end()};
}

// Tick values covering [low, high]: 1, 2 or 5 times a power of ten apart.
std::vector<double> ticks(double low, double high) {
  const double span = high - low;
  const double raw = span / 5;
  const double power = std::pow(10.0, std::floor(std::log10(raw)));
  double step = power;
  for (double m : {1.0, 2.0, 5.0, 10.0}) {
    step = m * power;
    if (span / step <= 6) break;
  }
  std::vector<double> out;
  for (double v = std::ceil(low / step) * step; v <= high + step * 1e-9; v += step) out.push_back(v);
  return out;
}

std::string tick_text(double v) {
  if (v == 0) return "0";
  const double a = std::fabs(v);
  if (a >= 1e6 || a < 1e-3) return fmt::format("{:.1e}", v);
  if (a >= 100) return fmt::format("{:.0f}", v);
  return fmt::format("{:.4g}", v);
}

std::string escape(const std::string& text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '&':
        out += "&amp;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

void draw_panel(std::string& svg, const Panel& panel, double top, double x_low, double x_high) {
  const double width = kWidth - kLeft - kRight, height = kPanelHeight;
  double low = std::numeric_limits<double>::infinity(), high = -low;
  for (const Series& s : panel.series) {
    for (const auto& [x, y] : s.points) {
      low = std::min(low, y);
      high = std::max(high, y);
    }
  }
  svg += fmt::format("<text x=\"{}\" y=\"{}\" font-size=\"14\" font-weight=\"bold\">{}</text>\n", kLeft, top - 8,
                     escape(panel.title));
  svg += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#888\"/>\n", kLeft, top,
                     width, height);
  if (!(low <= high)) {
    svg += fmt::format("<text x=\"{}\" y=\"{}\" font-size=\"12\" fill=\"#888\">no data</text>\n", kLeft + 10,
                       top + height / 2);
    return;
  }
  if (high - low < 1e-12 * std::max(1.0, std::fabs(high))) {
    const double pad = std::max(std::fabs(high) * 0.05, 1e-6);
    low -= pad;
    high += pad;
  } else {
    const double pad = (high - low) * 0.05;
    low -= pad;
    high += pad;
  }
  const auto px = [&](double x) { return kLeft + (x - x_low) / std::max(x_high - x_low, 1e-12) * width; };
  const auto py = [&](double y) { return top + height - (y - low) / (high - low) * height; };
  for (double t : ticks(low, high)) {
    svg += fmt::format("<line x1=\"{0}\" x2=\"{1}\" y1=\"{2:.1f}\" y2=\"{2:.1f}\" stroke=\"#eee\"/>\n", kLeft,
                       kLeft + width, py(t));
    svg += fmt::format("<text x=\"{}\" y=\"{:.1f}\" font-size=\"11\" text-anchor=\"end\">{}</text>\n", kLeft - 6,
                       py(t) + 4, tick_text(t));
  }
  for (double t : ticks(x_low, x_high)) {
    svg += fmt::format("<text x=\"{:.1f}\" y=\"{}\" font-size=\"11\" text-anchor=\"middle\">{}</text>\n", px(t),
                       top + height + 15, tick_text(t));
  }
  double legend_x = kLeft + width - 10;
  for (auto it = panel.series.rbegin(); it != panel.series.rend(); ++it) {
    const Series& s = *it;
    if (s.points.empty()) continue;
    std::string points;
    for (const auto& [x, y] : s.points) points += fmt::format("{:.1f},{:.1f} ", px(x), py(y));
    svg += fmt::format("<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"1.5\"{} points=\"{}\"/>\n", s.colour,
                       s.dashed ? " stroke-dasharray=\"6,3\"" : "", points);
    if (s.points.size() <= 30) {
      for (const auto& [x, y] : s.points) {
        svg += fmt::format("<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"2.5\" fill=\"{}\"/>\n", px(x), py(y), s.colour);
      }
    }
    svg += fmt::format("<text x=\"{:.1f}\" y=\"{}\" font-size=\"12\" text-anchor=\"end\" fill=\"{}\">{}</text>\n",
                       legend_x, top + 16, s.colour, escape(s.name));
    legend_x -= 9.0 * static_cast<double>(s.name.size()) + 16;
  }
}

}  // namespace

MetricsRun read_metrics_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw DataError(fmt::format("cannot read the metrics file '{}'", path), "check the path");
  MetricsRun run;
  run.label = std::filesystem::path(path).stem().string();
  int64_t number = 0;
  for (std::string line; std::getline(in, line);) {
    ++number;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json record = nlohmann::json::parse(line, nullptr, false);
    if (record.is_discarded() || !record.is_object()) {
      throw DataError(fmt::format("line {} of '{}' is not a JSON object", number, path),
                      "plot the file foldtron train --metrics-file writes (one JSON object per line)");
    }
    run.records.push_back(std::move(record));
  }
  return run;
}

std::string metrics_svg(const std::vector<MetricsRun>& runs, const std::string& title) {
  std::vector<Panel> panels{{"loss (solid: training, the task's loss without router losses; dashed: validation)", {}},
                            {"learning rate", {}},
                            {"throughput (tokens/s)", {}},
                            {"gradient norm", {}}};
  double x_low = std::numeric_limits<double>::infinity(), x_high = -x_low;
  bool any = false;
  for (size_t r = 0; r < runs.size(); ++r) {
    const std::string colour = kColours[r % (sizeof(kColours) / sizeof(kColours[0]))];
    const std::string prefix = runs.size() > 1 ? runs[r].label + " " : "";
    const auto add = [&](size_t panel, const std::string& name, const std::string& key, bool dashed) {
      Series s{prefix + name, colour, dashed, points_of(runs[r], key)};
      for (const auto& [x, y] : s.points) {
        x_low = std::min(x_low, x);
        x_high = std::max(x_high, x);
      }
      panels[panel].series.push_back(std::move(s));
    };
    // The task's loss (lm_loss) is what val_loss measures; files without it show loss.
    const bool has_lm = !points_of(runs[r], "lm_loss").empty();
    add(0, "loss", has_lm ? "lm_loss" : "loss", false);
    any = any || !panels[0].series.back().points.empty();
    add(0, "val_loss", "val_loss", true);
    add(1, "lr", "lr", false);
    add(2, "tokens/s", "tokens_per_s", false);
    add(3, "grad norm", "grad_norm", false);
  }
  if (!any) {
    throw DataError("the metrics hold no training step (records with 'step' and 'loss')",
                    "plot a file written by foldtron train --metrics-file");
  }
  if (x_high <= x_low) x_high = x_low + 1;
  const double height = kTop + static_cast<double>(panels.size()) * (kPanelHeight + kGap) + 10;
  std::string svg = fmt::format(
      "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" "
      "height=\"{1}\" viewBox=\"0 0 {0} {1}\" font-family=\"sans-serif\">\n<rect width=\"100%\" height=\"100%\" "
      "fill=\"white\"/>\n<text x=\"{2}\" y=\"22\" font-size=\"16\">{3}</text>\n",
      kWidth, height, kLeft, escape(title));
  for (size_t p = 0; p < panels.size(); ++p) {
    draw_panel(svg, panels[p], kTop + 20 + static_cast<double>(p) * (kPanelHeight + kGap), x_low, x_high);
  }
  svg += fmt::format("<text x=\"{}\" y=\"{}\" font-size=\"12\" text-anchor=\"middle\">step</text>\n",
                     kLeft + (kWidth - kLeft - kRight) / 2, height - 4);
  svg += "</svg>\n";
  return svg;
}

}  // namespace foldtron
