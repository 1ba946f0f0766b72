// `foldtron config`: compose and validate a config, then print it resolved (every key, with its
// value and description); also lists the keys and the presets.
#include <iostream>
#include <memory>

#include "apps/cli_options.h"
#include "apps/commands.h"
#include "config/validate.h"
#include "core/text.h"

namespace foldtron::cli {

Runner register_config(CLI::App& root) {
  struct Options {
    ConfigOptions config;
    int64_t world = 0;
    bool keys = false;
    bool presets = false;
  };
  auto options = std::make_shared<Options>();
  CLI::App* app = root.add_subcommand("config", "validate a config and print it resolved (preset < --config < --set "
                                                "< parallel flags)");
  options->config.add_to(*app);
  app->add_option("--world", options->world, "also check the layout for this many ranks")
      ->check(CLI::PositiveNumber);
  app->add_flag("--keys", options->keys, "list every config key with its type, default and meaning");
  app->add_flag("--presets", options->presets, "list the built-in presets");
  app->footer(environment_help());
  return [options]() {
    if (options->keys) {
      std::cout << describe_config_keys();
      return 0;
    }
    if (options->presets) {
      std::cout << join(preset_names(), "\n") << "\n";
      return 0;
    }
    const Config config = options->config.load();
    validate_config(config, options->world);
    std::cout << config_to_yaml(config);
    return 0;
  };
}

}  // namespace foldtron::cli
