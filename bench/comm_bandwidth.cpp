// Collective bandwidth of foldtron's Communicator, reported the way nccl-tests does:
//   algbw = bytes / time;  busbw = algbw * 2(n-1)/n (all_reduce), algbw * (n-1)/n (all_to_all)
// for messages from 1 MB to 1 GB (bf16), on CUDA (NCCL) or the CPU (MPI).
//   mpirun -np 2 comm_bandwidth [--device cuda|cpu] [--max-mb 1024] [--iters 20]
#include <chrono>
#include <cstring>
#include <iostream>
#include <string>

#include <fmt/format.h>
#include <torch/torch.h>

#include "parallel/communicator.h"
#include "parallel/mpi_runtime.h"
#include "parallel/process_groups.h"

namespace {

using namespace foldtron;

struct Options {
  bool cuda = true;
  int64_t max_mb = 1024;
  int iters = 20;
};

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--device") {
      o.cuda = std::strcmp(argv[i + 1], "cuda") == 0;
    } else if (flag == "--max-mb") {
      o.max_mb = std::stoll(argv[i + 1]);
    } else if (flag == "--iters") {
      o.iters = std::stoi(argv[i + 1]);
    } else {
      throw UsageError("unknown flag " + flag, "use --device cuda|cpu, --max-mb N, --iters N");
    }
  }
  return o;
}

void synchronize(bool cuda) {
  if (cuda) torch::cuda::synchronize();
}

// Seconds per operation, after warm-up.
template <typename Op>
double time_op(Communicator& world, bool cuda, int iters, Op op) {
  for (int i = 0; i < 5; ++i) op();
  synchronize(cuda);
  world.barrier();
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < iters; ++i) op();
  synchronize(cuda);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / iters;
  // The slowest rank defines the collective's time.
  torch::Tensor t = torch::full({1}, seconds, torch::kDouble);
  world.all_reduce(t, ReduceOp::kMax);
  return t.item<double>();
}

}  // namespace

int main(int argc, char** argv) {
  MpiRuntime mpi(&argc, &argv);
  return run_guarded([&] {
    const Options options = parse(argc, argv);
    const int n = mpi.size();
    CommOptions comm_options;
    comm_options.timeout_s = 300;
    if (options.cuda) comm_options.cuda_device = local_cuda_device(0);
    const Topology topology(ParallelLayout{n, 1, 1, 1, 1, 1, "tp-cp-ep-dp-pp"});
    ProcessGroups groups(topology, comm_options);
    Communicator& world = groups.world();
    const torch::Device device =
        options.cuda ? torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(comm_options.cuda_device))
                     : torch::Device(torch::kCPU);
    if (mpi.rank() == 0) {
      std::cout << fmt::format("# {} ranks, {}, bf16, {} iterations per size\n", n,
                               options.cuda ? "NCCL (CUDA)" : "MPI (CPU)", options.iters)
                << fmt::format("{:>10} {:>12} {:>12} {:>12} {:>12} {:>12}\n", "bytes", "ar_time_us", "ar_algbw",
                               "ar_busbw", "a2a_time_us", "a2a_busbw");
    }
    for (int64_t mb = 1; mb <= options.max_mb; mb *= 2) {
      const int64_t bytes = mb << 20;
      const int64_t elements = bytes / 2;
      torch::Tensor buffer = torch::ones({elements}, torch::TensorOptions().dtype(torch::kBFloat16).device(device));
      const double ar = time_op(world, options.cuda, options.iters, [&] { world.all_reduce_async(buffer)->wait(); });
      const int64_t rows = elements / n;
      torch::Tensor a2a_input = buffer.narrow(0, 0, rows * n).reshape({rows * n, 1});
      const std::vector<int64_t> splits(static_cast<size_t>(n), rows);
      const double a2a =
          time_op(world, options.cuda, options.iters, [&] { world.all_to_all_async(a2a_input, splits, splits)->wait(); });
      if (mpi.rank() == 0) {
        const double ar_algbw = static_cast<double>(bytes) / ar / 1e9;
        const double a2a_algbw = static_cast<double>(bytes) / a2a / 1e9;
        std::cout << fmt::format("{:>10} {:>12.1f} {:>12.2f} {:>12.2f} {:>12.1f} {:>12.2f}\n", bytes, ar * 1e6,
                                 ar_algbw, ar_algbw * 2.0 * (n - 1) / n, a2a * 1e6, a2a_algbw * (n - 1) / n);
      }
    }
    return 0;
  });
}
