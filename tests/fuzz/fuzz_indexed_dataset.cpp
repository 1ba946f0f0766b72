// The indexed dataset's .idx header and tables against a 1,000-byte .bin: every sequence is read.
#include <vector>

#include "data/indexed_dataset.h"
#include "fuzz_target.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace foldtron;
  std::vector<char> index(data, data + size);
  std::vector<char> tokens(1000);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<char>(i * 7);
  return fuzz::expect_named_rejection([&] {
    IndexedDataset dataset("fuzz", std::move(index), std::move(tokens));
    for (int64_t s = 0; s < dataset.num_sequences(); ++s) (void)dataset.sequence(s);
    for (int64_t d = 0; d <= dataset.num_documents(); ++d) (void)dataset.document_start(d);
  });
}
