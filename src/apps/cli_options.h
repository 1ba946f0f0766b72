// Command-line options shared by every subcommand that takes a config: --config, --preset,
// --set (repeatable), the parallel flags --tp --cp --pp --vpp --ep --etp --order
// --sequence-parallel, and --log-level. Parsing lives here; validation lives in config/.
#pragma once

#include <string>
#include <vector>

#include <CLI/CLI.hpp>

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

 private:
  ConfigSources sources_;
  std::vector<std::pair<std::string, CLI::Option*>> parallel_flags_;  // (config key, option)
  std::vector<std::pair<std::string, std::string>> parallel_values_;  // bound storage, same order
  bool sequence_parallel_ = false;
  CLI::Option* sequence_parallel_flag_ = nullptr;
};

// The help footer listing the environment variables foldtron reads.
std::string environment_help();

}  // namespace foldtron::cli
