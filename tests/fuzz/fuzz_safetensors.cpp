// The safetensors reader: header length, JSON header, dtypes, shapes and offsets against the file.
#include <torch/torch.h>

#include "checkpoint/safetensors.h"
#include "fuzz_target.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace foldtron;
  const std::string path = fuzz::scratch_file("model.safetensors", fuzz::as_text(data, size));
  return fuzz::expect_named_rejection([&] {
    SafetensorsFile file(path);
    for (const std::string& name : file.names()) {
      const torch::Tensor t = file.load(name);
      if (t.numel() > 0 && t.sizes() != torch::IntArrayRef(file.shape(name))) throw InternalError("shape mismatch");
    }
  });
}
