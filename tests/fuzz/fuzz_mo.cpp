// The gettext .mo reader: byte order, revision, tables, strings, plural forms, the charset.
#include "fuzz_target.h"
#include "tasks/unmt/mo_reader.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace foldtron;
  return fuzz::expect_named_rejection([&] { (void)parse_mo(fuzz::as_text(data, size), "fuzz.mo"); });
}
