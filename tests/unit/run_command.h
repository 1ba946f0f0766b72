// Runs a shell command for tests that drive the foldtron binary: its stdout (and stderr when the
// command redirects it) and exit code.
#pragma once

#include <array>
#include <cstdio>
#include <memory>
#include <string>

namespace foldtron::testing {

inline std::string run_command(const std::string& command, int* exit_code) {
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(popen(command.c_str(), "r"), pclose);
  std::string out;
  std::array<char, 4096> buffer;
  size_t n;
  while ((n = fread(buffer.data(), 1, buffer.size(), pipe.get())) > 0) out.append(buffer.data(), n);
  const int status = pclose(pipe.release());
  *exit_code = WEXITSTATUS(status);
  return out;
}

}  // namespace foldtron::testing
