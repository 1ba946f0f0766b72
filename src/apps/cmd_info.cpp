// `foldtron info`: what this build was made with (torch version, CUDA/NCCL paths, MPI library,
// the path of the experts' weight gradients).
#include <iostream>

#include <fmt/format.h>
#include <mpi.h>

#include "apps/commands.h"
#include "core/torch_compat.h"
#include "moe/experts.h"

namespace foldtron::cli {

Runner register_info(CLI::App& root) {
  root.add_subcommand("info",
                      "print the versions this build uses (torch, CUDA, MPI) and its expert weight-gradient path");
  return []() {
    char mpi_version[MPI_MAX_LIBRARY_VERSION_STRING];
    int length = 0;
    MPI_Get_library_version(mpi_version, &length);
    std::string mpi(mpi_version, static_cast<size_t>(length));
    mpi = mpi.substr(0, mpi.find_first_of(",\n"));
    std::cout << fmt::format("foldtron {}\n", FOLDTRON_VERSION)
              << fmt::format("torch {} (sdpa {}, grouped_mm {})\n", torch_compat::torch_version(),
                             torch_compat::has_sdpa() ? "yes" : "no", torch_compat::has_grouped_mm() ? "yes" : "no")
              << fmt::format("cuda paths {}, cuda devices {}\n", torch_compat::built_with_cuda() ? "built" : "not built",
                             torch_compat::cuda_device_count())
              << fmt::format("expert weight gradients: {}\n", expert_wgrad_kernel())
              << fmt::format("mpi {}\n", mpi);
    return 0;
  };
}

}  // namespace foldtron::cli
