// `foldtron plan`: the folded layouts of a model over N GPUs, ranked by predicted step time, with
// predicted memory per GPU (training/plan.h has the model); `--check FILE` compares the
// predictions with measured steps (docs/planner.md).
#include <algorithm>
#include <iostream>
#include <memory>
#include <optional>
#include <type_traits>
#include <utility>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "apps/cli_options.h"
#include "apps/commands.h"
#include "config/validate.h"
#include "core/errors.h"
#include "core/files.h"
#include "training/flops.h"
#include "training/plan.h"

namespace foldtron::cli {

namespace {

struct Options {
  ConfigOptions config;
  int64_t gpus = 0;
  std::string gpu = "h200";
  std::string profile_file;
  int64_t seq_length = 0, global_batch = 0, micro_batch = 0;
  std::string recompute, distributed_optimizer;
  int64_t top = 10;
  std::string check_file;
  double tolerance = 0.10;
  bool json = false;
};

std::string read_whole(const std::string& path, const char* what) {
  std::optional<std::string> text = read_whole_file(path);
  if (!text) throw UsageError(fmt::format("cannot read the {} '{}'", what, path), "check the path");
  return std::move(*text);
}

HardwareProfile load_profile(const Options& options) {
  if (options.profile_file.empty()) return builtin_hardware_profile(options.gpu);
  return parse_hardware_profile(read_whole(options.profile_file, "hardware profile"), options.profile_file);
}

std::string row(int64_t rank, const PlanPrediction& p) {
  return fmt::format("{:>4}  {:<52} {:>7.1f} {:>5} {:>8.4f} {:>6.1f}% {:>8.4f} {:>8.4f} {:>7.4f} {:>7.4f} {:>7.4f} {:>7.4f}\n",
                     rank, describe_layout(p.layout), p.memory_gib, p.fits ? "yes" : "no", p.step_s, 100 * p.mfu,
                     p.compute_s, p.memory_bound_s, p.gaps_s, p.comm_s, p.bubble_s, p.optimizer_s);
}

const char* kHeader =
    "   #  layout                                               mem GiB  fits   step s    MFU  compute  mem-bnd    "
    "gaps    comm  bubble   optim\n";

nlohmann::json to_json(const PlanPrediction& p) {
  const PlanLayout& l = p.layout;
  return {{"tp", l.tp}, {"cp", l.cp}, {"pp", l.pp}, {"vpp", l.vpp}, {"ep", l.ep}, {"etp", l.etp}, {"dp", l.dp},
          {"edp", l.edp}, {"micro_batch", l.micro_batch}, {"recompute", enum_name(l.recompute)},
          {"distributed_optimizer", l.distributed_optimizer}, {"sequence_parallel", l.sequence_parallel},
          {"memory_gib", p.memory_gib},
          {"state_gib", p.state_gib}, {"fits", p.fits}, {"step_s", p.step_s}, {"mfu", p.mfu},
          {"compute_s", p.compute_s}, {"memory_bound_s", p.memory_bound_s}, {"gaps_s", p.gaps_s},
          {"comm_s", p.comm_s}, {"bubble_s", p.bubble_s}, {"optimizer_s", p.optimizer_s}};
}

// A field of a measured run; a UsageError names the run and the field.
template <typename T>
T run_field(const nlohmann::json& run, const char* key, const std::string& file, size_t index) {
  try {
    return run.at(key).get<T>();
  } catch (const nlohmann::json::exception&) {
    throw UsageError(fmt::format("{}: run {} has no valid '{}'", file, index, key),
                     "each run lists name, gpus, preset, set, seq_length, global_batch_size, layout and step_s");
  }
}

// Predicted against measured for every run of `file`; exit 1 when a gated run (all but those
// marked "gate": false) is off by more than the tolerance (step time; peak memory too where
// measured).
int check(const Options& options, const HardwareProfile& profile) {
  const std::string file = options.check_file;
  nlohmann::json root;
  try {
    root = nlohmann::json::parse(read_whole(file, "measured runs file"));
  } catch (const nlohmann::json::exception& e) {
    throw UsageError(fmt::format("{} is not valid JSON: {}", file, e.what()), "see docs/planner/measured_h200.json");
  }
  if (!root.is_object() || !root.contains("runs") || !root["runs"].is_array() || root["runs"].empty()) {
    throw UsageError(fmt::format("{} has no 'runs' list", file), "see docs/planner/measured_h200.json");
  }
  // The runs were measured on one GPU kind: comparing them with another's profile is a mistake.
  const std::string measured_on = root.value("profile", std::string());
  if (!measured_on.empty() && options.profile_file.empty() && measured_on != options.gpu) {
    throw UsageError(fmt::format("{} holds runs measured on '{}', not '{}'", file, measured_on, options.gpu),
                     fmt::format("use --gpu {} (or --profile FILE for a measured profile of that GPU)", measured_on));
  }
  std::cout << fmt::format("predicted against measured ({}; tolerance {:.0f}%)\n", profile.source,
                           100 * options.tolerance);
  std::cout << fmt::format("{:<22} {:>4}  {:<52} {:>9} {:>9} {:>7} {:>8} {:>8} {:>7}\n", "run", "gpus", "layout",
                           "meas. s", "pred. s", "error", "meas GiB", "pred GiB", "error");
  int outside = 0, gated_runs = 0, listed_runs = 0;
  for (size_t i = 0; i < root["runs"].size(); ++i) {
    const nlohmann::json& run = root["runs"][i];
    ConfigSources sources;
    sources.preset = run_field<std::string>(run, "preset", file, i);
    sources.overrides = run.value("set", std::vector<std::string>{});
    sources.overrides.push_back(fmt::format("train.seq_length={}", run_field<int64_t>(run, "seq_length", file, i)));
    sources.overrides.push_back(
        fmt::format("train.global_batch_size={}", run_field<int64_t>(run, "global_batch_size", file, i)));
    const nlohmann::json layout = run_field<nlohmann::json>(run, "layout", file, i);
    const int64_t gpus = run_field<int64_t>(run, "gpus", file, i);
    // The layout's keys become config overrides; a value of the wrong type is named.
    const auto value = [&](const char* key, const auto& fallback) {
      using T = std::decay_t<decltype(fallback)>;
      if (!layout.is_object() || !layout.contains(key)) return fallback;
      try {
        return layout.at(key).get<T>();
      } catch (const nlohmann::json::exception&) {
        throw UsageError(fmt::format("{}: run {} has a layout.{} of the wrong type", file, i, key),
                         "sizes and micro_batch are integers, recompute a name, distributed_optimizer true or false");
      }
    };
    for (const char* key : {"tp", "cp", "pp", "vpp", "ep", "etp"}) {
      sources.overrides.push_back(fmt::format("parallel.{}={}", key, value(key, int64_t{key == std::string("etp") ? 0 : 1})));
    }
    sources.overrides.push_back(fmt::format("parallel.sequence_parallel={}", value("tp", int64_t{1}) > 1));
    sources.overrides.push_back(fmt::format("parallel.distributed_optimizer={}", value("distributed_optimizer", false)));
    sources.overrides.push_back(fmt::format("train.micro_batch_size={}", value("micro_batch", int64_t{1})));
    sources.overrides.push_back("model.recompute=" + value("recompute", std::string("none")));
    for (const std::string& extra : run.value("layout_set", std::vector<std::string>{})) sources.overrides.push_back(extra);
    const Config config = load_config(sources);
    validate_config(config, gpus);
    const PlanLayout l = plan_layout_of(config, gpus);
    const PlanPrediction pred = predict_layout(config, l, gpus, profile);
    const double measured = run_field<double>(run, "step_s", file, i);
    const double error = pred.step_s / measured - 1;
    bool ok = std::abs(error) <= options.tolerance;
    std::string memory = fmt::format("{:>8} {:>8.1f} {:>7}", "-", pred.memory_gib, "-");
    if (run.contains("peak_gib")) {
      const double peak = run_field<double>(run, "peak_gib", file, i), memory_error = pred.memory_gib / peak - 1;
      ok = ok && std::abs(memory_error) <= options.tolerance;
      memory = fmt::format("{:>8.2f} {:>8.2f} {:>+6.1f}%", peak, pred.memory_gib, 100 * memory_error);
    }
    const bool gated = run.value("gate", true);
    (gated ? gated_runs : listed_runs) += 1;
    outside += ok || !gated ? 0 : 1;
    std::cout << fmt::format("{:<22} {:>4}  {:<52} {:>9.4f} {:>9.4f} {:>+6.1f}% {}{}{}\n",
                             run_field<std::string>(run, "name", file, i), gpus, describe_layout(l), measured,
                             pred.step_s, 100 * error, memory, ok ? "" : "  <- outside", gated ? "" : " (not gated)");
  }
  std::cout << fmt::format("{} of {} gated runs within {:.0f}%", gated_runs - outside, gated_runs, 100 * options.tolerance);
  std::cout << (listed_runs > 0 ? fmt::format("; {} more listed, not gated (see the file's note)\n", listed_runs) : "\n");
  return outside == 0 ? 0 : 1;
}

}  // namespace

Runner register_plan(CLI::App& root) {
  auto options = std::make_shared<Options>();
  CLI::App* app = root.add_subcommand(
      "plan", "rank the folded layouts of a model over N GPUs by predicted step time, with memory per GPU");
  options->config.add_to(*app);
  app->add_option("--gpus", options->gpus, "number of GPUs")->check(CLI::PositiveNumber);
  app->add_option("--gpu", options->gpu, "built-in hardware profile (configs/hardware/NAME.json)")->capture_default_str();
  app->add_option("--profile", options->profile_file, "a measured hardware profile (bench/calibrate_planner.py)");
  app->add_option("--seq-length", options->seq_length, "tokens per sequence (default: the config's)")
      ->check(CLI::PositiveNumber);
  app->add_option("--global-batch-size", options->global_batch, "sequences per step (default: the config's)")
      ->check(CLI::PositiveNumber);
  app->add_option("--micro-batch-size", options->micro_batch, "only this micro-batch size")->check(CLI::PositiveNumber);
  app->add_option("--recompute", options->recompute, "only this recomputation")
      ->check(CLI::IsMember(enum_names<Recompute>()));
  app->add_option("--distributed-optimizer", options->distributed_optimizer, "only with (true) or without (false)")
      ->check(CLI::IsMember({"true", "false"}));
  app->add_option("--top", options->top, "layouts to list")->capture_default_str()->check(CLI::PositiveNumber);
  app->add_option("--check", options->check_file,
                  "compare predictions with measured runs listed in FILE (docs/planner/measured_h200.json)");
  app->add_option("--tolerance", options->tolerance, "--check: allowed relative error")
      ->capture_default_str()
      ->check(CLI::Range(0.001, 1.0));
  app->add_flag("--json", options->json, "print the ranked layouts as JSON");
  app->footer("Parallel flags (--tp, --cp, --pp, --vpp, --ep, --etp), or the same keys set in the config, fix those sizes;\n"
              "the rest are searched, and so are micro-batch, recomputation and the distributed optimizer unless fixed.\n" +
              environment_help());
  return [options, app]() {
    const HardwareProfile profile = load_profile(*options);
    if (!options->check_file.empty()) {
      for (const char* flag : {"--gpus", "--preset", "--config", "--set", "--seq-length", "--global-batch-size",
                               "--micro-batch-size", "--recompute", "--distributed-optimizer", "--tp", "--cp", "--pp",
                               "--vpp", "--ep", "--etp", "--order", "--sequence-parallel", "--top", "--json"}) {
        if (app->get_option(flag)->count() > 0) {
          throw UsageError(fmt::format("--check takes each run's config and layout from its file; {} does not apply", flag),
                           "drop it, or run the plan without --check");
        }
      }
      return check(*options, profile);
    }
    if (options->gpus == 0) throw UsageError("plan needs --gpus", "e.g. foldtron plan --preset mixtral-8x7b --gpus 8");
    std::vector<std::string> flags;
    if (options->seq_length > 0) flags.push_back(fmt::format("train.seq_length={}", options->seq_length));
    if (options->global_batch > 0) flags.push_back(fmt::format("train.global_batch_size={}", options->global_batch));
    const Config config = options->config.load(flags);
    const ParallelConfig defaults;
    if (config.parallel.order != defaults.order) {
      throw UsageError(fmt::format("the planner models the default rank order ({}), not '{}'", defaults.order,
                                   config.parallel.order),
                       "drop --order / parallel.order; its groups' placement on nodes is what the plan assumes");
    }
    if (app->get_option("--sequence-parallel")->count() > 0) {
      throw UsageError("--sequence-parallel does not apply to plan", "the planner turns it on wherever tp > 1");
    }
    // A size the flags or the config (a preset's, --config, --set) set away from its default is fixed.
    PlanPins pins;
    const auto pinned = [&](const char* flag, int64_t value, int64_t unset) -> std::optional<int64_t> {
      if (app->get_option(flag)->count() > 0 || value != unset) return value;
      return std::nullopt;
    };
    pins.tp = pinned("--tp", config.parallel.tp, defaults.tp), pins.cp = pinned("--cp", config.parallel.cp, defaults.cp);
    pins.pp = pinned("--pp", config.parallel.pp, defaults.pp), pins.vpp = pinned("--vpp", config.parallel.vpp, defaults.vpp);
    pins.ep = pinned("--ep", config.parallel.ep, defaults.ep), pins.etp = pinned("--etp", config.parallel.etp, defaults.etp);
    if (options->micro_batch > 0) pins.micro_batch = options->micro_batch;
    const std::vector<std::string>& recomputes = enum_names<Recompute>();
    if (!options->recompute.empty()) {
      pins.recompute = static_cast<Recompute>(std::find(recomputes.begin(), recomputes.end(), options->recompute) -
                                              recomputes.begin());
    }
    if (!options->distributed_optimizer.empty()) pins.distributed_optimizer = options->distributed_optimizer == "true";
    const std::vector<PlanPrediction> plans = plan_layouts(config, options->gpus, profile, pins);
    if (plans.empty()) {
      throw UsageError(fmt::format("no layout of {} GPUs passes the config's validation with the sizes given", options->gpus),
                       "check `foldtron config --world N` with the same flags for the reason, or fix fewer axes");
    }
    int64_t fitting = 0;
    for (const PlanPrediction& p : plans) fitting += p.fits ? 1 : 0;
    if (options->json) {
      nlohmann::json list = nlohmann::json::array();
      for (size_t i = 0; i < plans.size() && static_cast<int64_t>(i) < options->top; ++i) list.push_back(to_json(plans[i]));
      std::cout << nlohmann::json{{"profile", profile.source}, {"gpus", options->gpus}, {"layouts", list}}.dump(1) << "\n";
      return 0;
    }
    std::cout << fmt::format(
        "{} layers, {} GPUs of {} ({}), seq {}, global batch {}: {} valid layouts, {} fit in {:.1f} GiB\n",
        config.model.num_layers, options->gpus, profile.name, profile.source, config.train.seq_length,
        config.train.global_batch_size, plans.size(), fitting, profile.memory_gib);
    std::cout << kHeader;
    for (size_t i = 0; i < plans.size() && static_cast<int64_t>(i) < options->top; ++i) {
      std::cout << row(static_cast<int64_t>(i) + 1, plans[i]);
    }
    std::cout << "seconds per step by part; MFU as Megatron-Core counts it; the model and its assumptions: "
                 "docs/planner.md\n";
    return 0;
  };
}

}  // namespace foldtron::cli
