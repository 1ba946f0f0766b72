// The CoNLL-2015/2016 relations reader (one JSON relation per line).
#include "fuzz_target.h"
#include "tasks/discourse/relations.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace foldtron;
  const std::string path = fuzz::scratch_file("relations.json", fuzz::as_text(data, size));
  return fuzz::expect_named_rejection([&] { (void)read_conll_relations(path); });
}
