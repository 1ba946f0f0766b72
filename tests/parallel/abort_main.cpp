// A job in which one rank fails, for the failure-policy tests (run_abort.cmake):
//   abort_job throw  - rank 1 throws a user error while the others wait in an all-reduce with a
//                      long timeout: the error must end the whole job at once (MPI_Abort).
//   abort_job stall  - rank 1 never joins the all-reduce: the others must give up after the
//                      2 s timeout with an error naming the collective and the group.
#include <chrono>
#include <cstring>
#include <thread>

#include <torch/torch.h>

#include "core/errors.h"
#include "parallel/communicator.h"
#include "parallel/mpi_runtime.h"

int main(int argc, char** argv) {
  using namespace foldtron;
  MpiRuntime mpi(&argc, &argv);
  const bool stall = argc > 1 && std::strcmp(argv[1], "stall") == 0;
  return run_guarded([&] {
    MPI_Comm comm;
    MPI_Comm_dup(MPI_COMM_WORLD, &comm);
    std::vector<int64_t> ranks;
    for (int r = 0; r < mpi.size(); ++r) ranks.push_back(r);
    CommOptions options;
    options.timeout_s = stall ? 2.0 : 600.0;
    Communicator world("world", comm, ranks, options);
    if (mpi.rank() == 1) {
      if (stall) {
        std::this_thread::sleep_for(std::chrono::seconds(60));
        return 0;
      }
      throw DataError("planted failure on rank 1", "this is what the test expects");
    }
    torch::Tensor value = torch::ones({4});
    world.all_reduce(value);
    return 0;
  });
}
