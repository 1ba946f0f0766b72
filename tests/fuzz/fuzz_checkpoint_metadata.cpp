// A distributed checkpoint's metadata.json: format version, files, tensors, boxes and the state.
#include "checkpoint/distributed.h"
#include "fuzz_target.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace foldtron;
  fuzz::scratch_file("metadata.json", fuzz::as_text(data, size));
  return fuzz::expect_named_rejection([&] {
    CheckpointReader reader(fuzz::scratch(), /*verify=*/true);
    for (const std::string& tensor : reader.tensors()) (void)reader.shape(tensor);
  });
}
