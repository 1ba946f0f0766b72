// Command-line options shared by every subcommand that takes a config: --config, --preset,
// --set (repeatable), the parallel flags --tp --cp --pp --vpp --ep --etp --order
// --sequence-parallel, and --log-level. Parsing lives here; validation lives in config/.
#pragma once

#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <torch/types.h>

#include "config/config.h"
#include "config/config_load.h"

namespace foldtron::cli {

class ConfigOptions {
 public:
  // Adds the options to `app`.
  void add_to(CLI::App& app);
  // Loads the config: preset < --config < --set < parallel flags < `flag_overrides` (the
  // subcommand's own flags, as section.key=value).
  Config load(const std::vector<std::string>& flag_overrides = {}) const;
  // The same on top of `base` (e.g. a Hugging Face model's config), lowest of all.
  Config load_over(const Config& base, const std::vector<std::string>& flag_overrides = {}) const;

 private:
  ConfigSources with_flags(const std::vector<std::string>& flag_overrides) const;

  ConfigSources sources_;
  std::vector<std::pair<std::string, CLI::Option*>> parallel_flags_;  // (config key, option)
  std::vector<std::pair<std::string, std::string>> parallel_values_;  // bound storage, same order
  bool sequence_parallel_ = false;
  CLI::Option* sequence_parallel_flag_ = nullptr;
};

// --device auto|cpu|cuda bound to `device`.
void add_device_option(CLI::App& app, std::string& device);
// Whether the --device value asks for CUDA (auto: when this build and machine have it); a
// UsageError for cuda without CUDA.
bool use_cuda(const std::string& device);
// This rank's device: its GPU (by local rank, parallel.devices_per_node), made the current CUDA
// device, or the CPU with one torch thread per rank. Collective over MPI_COMM_WORLD when cuda.
torch::Device rank_device(bool cuda, const ParallelConfig& parallel);

// `value` as a YAML single-quoted scalar (quotes doubled), so a --set override of a text key
// stays one string whatever it holds ("Note: x", "it's").
std::string yaml_quoted(const std::string& value);

// The root's --log-level, when given: every config then loads with logging.level set to it.
void set_log_level_flag(const std::string& level);

// The help footer listing the environment variables foldtron reads.
std::string environment_help();

}  // namespace foldtron::cli
