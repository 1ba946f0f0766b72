// The PDTB 2.0 CSV reader (the pipe-separated export of the annotation).
#include "fuzz_target.h"
#include "tasks/discourse/pdtb.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace foldtron;
  const std::string path = fuzz::scratch_file("pdtb2.csv", fuzz::as_text(data, size));
  return fuzz::expect_named_rejection([&] { (void)read_pdtb2_csv(path); });
}
