// Building a Config from its sources, strictly: an unknown section or key, a value of the wrong
// type or a misspelled enumeration is a ConfigError naming the key (with a close match), the
// value and a hint; all such problems are collected and reported together.
//
// Precedence, lowest first: preset < --config file < --set section.key=value (in order given)
// < the parallel flags (--tp, --cp, ...). A preset is the base a user file adjusts.
#pragma once

#include <string>
#include <vector>

#include "config/config.h"

namespace foldtron {

struct ConfigSources {
  std::string preset;                  // "" for none; see preset_names()
  std::string config_file;             // "" for none
  std::vector<std::string> overrides;  // "section.key=value", YAML value syntax
};

// `base_yaml` (e.g. an imported Hugging Face model's config) is merged first, below the preset.
Config load_config(const ConfigSources& sources, const std::string& base_yaml = "");

// Embedded presets (configs/*.yaml, compiled into the binary).
std::vector<std::string> preset_names();
const std::string& preset_yaml(const std::string& name);  // throws ConfigError naming the presets

// The resolved config as YAML, every key with its value and description; load_config of this
// text gives back the same Config.
std::string config_to_yaml(const Config& config);

// One line per key: "section.key  type  default  description".
std::string describe_config_keys();

}  // namespace foldtron
