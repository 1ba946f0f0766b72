// Shared config options of the foldtron CLI (see cli_options.h).
#include "apps/cli_options.h"

#include <fmt/format.h>

#include <torch/cuda.h>
#include <torch/utils.h>

#include "core/errors.h"
#include "core/text.h"
#include "core/torch_compat.h"
#include "parallel/process_groups.h"

namespace foldtron::cli {
namespace {

std::string& log_level_flag() {
  static std::string level;  // empty: not given
  return level;
}

}  // namespace

void set_log_level_flag(const std::string& level) { log_level_flag() = level; }

void ConfigOptions::add_to(CLI::App& app) {
  app.add_option("--config", sources_.config_file, "YAML config file (sections model, moe, parallel, train, data, "
                                                   "translation, checkpoint, logging)");
  app.add_option("--preset", sources_.preset, "start from a built-in preset: " + join(preset_names(), ", "));
  app.add_option("--set", sources_.overrides, "override one key, e.g. --set model.num_layers=4 (repeatable)")
      ->type_name("SECTION.KEY=VALUE");
  // The parallel flags are --set parallel.<key>=<value> under another name.
  parallel_values_ = {{"tp", ""}, {"cp", ""}, {"pp", ""}, {"vpp", ""}, {"ep", ""}, {"etp", ""}, {"order", ""}};
  const char* docs[] = {"tensor-parallel size", "context-parallel size", "pipeline-parallel size",
                        "virtual pipeline stages per rank", "expert-parallel size",
                        "expert tensor-parallel size", "rank order of the axes, fastest first (tp-cp-ep-dp-pp)"};
  for (size_t i = 0; i < parallel_values_.size(); ++i) {
    auto& [key, value] = parallel_values_[i];
    CLI::Option* option = app.add_option("--" + key, value, docs[i]);
    option->type_name(key == "order" ? "ORDER" : "N");
    if (key != "order") option->check(CLI::PositiveNumber);
    parallel_flags_.emplace_back(key, option);
  }
  sequence_parallel_flag_ =
      app.add_flag("--sequence-parallel", sequence_parallel_, "sequence parallelism over tp (parallel.sequence_parallel)");
}

Config ConfigOptions::load_over(const Config& base, const std::vector<std::string>& flag_overrides) const {
  return load_config(with_flags(flag_overrides), config_to_yaml(base));
}

Config ConfigOptions::load(const std::vector<std::string>& flag_overrides) const {
  return load_config(with_flags(flag_overrides));
}

ConfigSources ConfigOptions::with_flags(const std::vector<std::string>& flag_overrides) const {
  ConfigSources sources = sources_;
  for (size_t i = 0; i < parallel_flags_.size(); ++i) {
    if (parallel_flags_[i].second->count() > 0) {
      sources.overrides.push_back(fmt::format("parallel.{}={}", parallel_values_[i].first, parallel_values_[i].second));
    }
  }
  if (sequence_parallel_flag_->count() > 0) sources.overrides.push_back("parallel.sequence_parallel=true");
  sources.overrides.insert(sources.overrides.end(), flag_overrides.begin(), flag_overrides.end());
  if (!log_level_flag().empty()) sources.overrides.push_back("logging.level=" + log_level_flag());
  return sources;
}

void add_device_option(CLI::App& app, std::string& device) {
  app.add_option("--device", device, "auto (CUDA when this build and machine have it), cpu or cuda")
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}))
      ->capture_default_str();
}

bool use_cuda(const std::string& device) {
  const bool available = torch_compat::built_with_cuda() && torch::cuda::is_available();
  if (device == "cuda" && !available) {
    throw UsageError("--device cuda, but this build or machine has no CUDA",
                     "use --device cpu, or build with scripts/gpu_build.sh on a GPU machine");
  }
  return device == "cuda" || (device == "auto" && available);
}

torch::Device rank_device(bool cuda, const ParallelConfig& parallel) {
  if (!cuda) {
    torch::set_num_threads(1);
    return torch::kCPU;
  }
  const int index = local_cuda_device(parallel.devices_per_node);
  torch_compat::set_cuda_device(index);  // kernels and streams of this rank go to its GPU
  return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(index));
}

std::string environment_help() {
  return "Environment: FOLDTRON_SPM_PLUGIN and FOLDTRON_SPM_TRAIN point at the sentencepiece plugin and trainer "
         "when they are not beside the foldtron binary (they are after a build); FOLDTRON_FAULT injects a fault "
         "for reliability tests (ACTION@POINT#N[/RANK], docs/reliability.md; never set it in a real run); MPI and "
         "NCCL read their own (OMPI_*, NCCL_*, CUDA_VISIBLE_DEVICES); OMP_NUM_THREADS sets the host threads of a GPU rank "
         "(the initial values are drawn by as many; CPU ranks use one).";
}

std::string yaml_quoted(const std::string& value) {
  std::string quoted = "'";
  for (char c : value) quoted += c == '\'' ? std::string("''") : std::string(1, c);
  return quoted + "'";
}

}  // namespace foldtron::cli
