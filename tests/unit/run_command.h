// Runs a shell command for tests that drive the foldtron binary: its stdout (and stderr when the
// command redirects it) and exit code.
#pragma once

#include <array>
#include <cstdio>
#include <memory>
#include <string>

namespace foldtron::testing {

// The start of an mpirun command line for the tests: as root where CI runs them, one torch thread
// a rank, more ranks than cores allowed; append "-np N ".
inline const std::string kMpirun =
    "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1 mpirun --oversubscribe ";

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
