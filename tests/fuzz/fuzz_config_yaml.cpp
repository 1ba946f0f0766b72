// The YAML config loader (a --config file) and the validation after it, with and without a world.
#include "config/config_load.h"
#include "config/validate.h"
#include "fuzz_target.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace foldtron;
  const std::string path = fuzz::scratch_file("config.yaml", fuzz::as_text(data, size));
  return fuzz::expect_named_rejection([&] {
    const Config config = load_config({"", path, {}});
    (void)check_config(config, 8);
    (void)check_config(config, 0);  // `foldtron config` without a world: the layout's own product
  });
}
