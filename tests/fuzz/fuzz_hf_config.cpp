// A Hugging Face model directory's config.json, as `convert` and `forward` read it.
#include "checkpoint/hf_config.h"
#include "fuzz_target.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace foldtron;
  fuzz::scratch_file("config.json", fuzz::as_text(data, size));
  return fuzz::expect_named_rejection([&] { (void)hf_model_config(fuzz::scratch()); });
}
