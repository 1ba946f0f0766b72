// Shared by the fuzz targets (tests/fuzz/README.md): each target defines LLVMFuzzerTestOneInput,
// feeds the bytes to one reader, and accepts a foldtron::Error (a named rejection) as the right
// answer to bad input. Anything else (a crash, a sanitizer report, an uncaught exception of
// another type, a hang) is a finding. Built with libFuzzer under clang (scripts/fuzz.sh) or with
// driver.cpp's own mutation loop in the normal build (the short run in CI).
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/errors.h"
#include "core/files.h"

namespace foldtron::fuzz {

inline std::string_view as_text(const uint8_t* data, size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

// A scratch folder of this process (in /dev/shm when there is one: the readers take paths).
inline const std::string& scratch() {
  static const std::string dir = [] {
    const std::string base = ::access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    std::string d = base + "/foldtron_fuzz_" + std::to_string(::getpid());
    ::mkdir(d.c_str(), 0755);
    return d;
  }();
  return dir;
}

// Writes `bytes` to scratch()/NAME and returns its path.
inline std::string scratch_file(const std::string& name, std::string_view bytes) {
  const std::string path = scratch() + "/" + name;
  Fd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644));
  if (fd.get() < 0 || !write_all(fd.get(), bytes.data(), bytes.size())) {
    throw InternalError("fuzz: cannot write the scratch file " + path);
  }
  return path;
}

// Runs `read`; a foldtron::Error is the expected answer to bad input.
template <typename F>
int expect_named_rejection(F&& read) {
  try {
    read();
  } catch (const InternalError&) {
    throw;  // a broken invariant is a finding
  } catch (const Error&) {
  }
  return 0;
}

}  // namespace foldtron::fuzz
