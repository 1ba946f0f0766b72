// gtest main for multi-rank tests: initializes MPI, runs the tests on every rank, and exits
// non-zero on any rank with a failure (mpirun then fails the job). Rank 0 prints gtest's usual
// output; other ranks print only their failures, prefixed with their rank.
//   mpirun -np 4 test_comm [--device=cuda] [gtest flags]
#include <cstring>

#include <fmt/format.h>

#include "core/torch_compat.h"
#include "mpi_test.h"
#include "parallel/mpi_runtime.h"
#include "parallel/process_groups.h"

namespace foldtron::testing {
namespace {

bool use_cuda = false;
int rank = 0;
int size = 1;
std::unique_ptr<Communicator> world_comm;

class RankFailurePrinter : public ::testing::EmptyTestEventListener {
  void OnTestPartResult(const ::testing::TestPartResult& result) override {
    if (!result.failed()) return;
    std::fprintf(stderr, "[rank %d] %s:%d: Failure\n%s\n", rank, result.file_name() ? result.file_name() : "?",
                 result.line_number(), result.summary());
  }
  void OnTestEnd(const ::testing::TestInfo& info) override {
    if (info.result()->Failed()) {
      std::fprintf(stderr, "[rank %d] FAILED %s.%s\n", rank, info.test_suite_name(), info.name());
    }
  }
};

}  // namespace

torch::Device device() {
  if (!use_cuda) return torch::kCPU;
  return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(rank % std::max<int64_t>(torch::cuda::device_count(), 1)));
}

CommOptions comm_options() {
  CommOptions options;
  options.timeout_s = 45;
  options.cuda_device = use_cuda ? static_cast<int>(device().index()) : -1;
  return options;
}

int world_rank() { return rank; }
int world_size() { return size; }

Communicator& world() {
  if (!world_comm) {
    MPI_Comm comm;
    MPI_Comm_dup(MPI_COMM_WORLD, &comm);
    std::vector<int64_t> ranks;
    for (int r = 0; r < size; ++r) ranks.push_back(r);
    world_comm = std::make_unique<Communicator>("world", comm, ranks, comm_options());
  }
  return *world_comm;
}

torch::Tensor data(int64_t seed, at::IntArrayRef shape, torch::ScalarType dtype) {
  at::Generator generator = at::detail::createCPUGenerator(static_cast<uint64_t>(seed) * 7919 + 17);
  torch::Tensor values;
  if (c10::isFloatingType(dtype)) {
    values = torch::randn(shape, generator, torch::kDouble).to(dtype);
  } else {
    values = torch::randint(-50, 50, shape, generator, torch::kLong).to(dtype);
  }
  return values;
}

torch::Tensor gather_full(const torch::Tensor& shard, const ParamInfo& info, ProcessGroups& groups) {
  torch::Tensor full = shard.detach();
  Communicator& split_group = info.expert ? groups.etp() : groups.tp();
  if (info.tp_split_dim >= 0 && split_group.size() > 1) {
    const torch::Tensor all = split_group.all_gather(full.contiguous());  // shards stacked on dim 0
    full = unshard(all.chunk(split_group.size(), 0), info);
  } else if (info.padded_rows > 0) {
    full = unshard({full}, info);
  }
  if (info.expert && groups.ep().size() > 1) full = groups.ep().all_gather(full.contiguous());  // [E, ...]
  return full.cpu().clone();  // a copy: the shard may be a buffer that changes later
}

::testing::AssertionResult close(const torch::Tensor& a, const torch::Tensor& b, double rtol, double atol) {
  const torch::Tensor x = a.detach().to(torch::kCPU).to(torch::kDouble);
  const torch::Tensor y = b.detach().to(torch::kCPU).to(torch::kDouble);
  if (x.sizes() != y.sizes()) {
    return ::testing::AssertionFailure() << "shapes differ: " << x.sizes() << " vs " << y.sizes();
  }
  if (x.numel() == 0 || torch::allclose(x, y, rtol, atol)) return ::testing::AssertionSuccess();
  const torch::Tensor diff = (x - y).abs();
  const int64_t worst = diff.flatten().argmax().item<int64_t>();
  return ::testing::AssertionFailure() << fmt::format("max |a-b| = {:.3g} at flat index {} (a={:.9g}, b={:.9g})",
                                                      diff.max().item<double>(), worst,
                                                      x.flatten()[worst].item<double>(),
                                                      y.flatten()[worst].item<double>());
}

}  // namespace foldtron::testing

int main(int argc, char** argv) {
  using namespace foldtron::testing;
  foldtron::MpiRuntime mpi(&argc, &argv);
  rank = mpi.rank();
  size = mpi.size();
  ::testing::InitGoogleTest(&argc, argv);
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--device=cuda") == 0) use_cuda = true;
  }
  // As the trainer does: this rank's GPU is its current device (foldtron's kernels use its stream).
  if (use_cuda) foldtron::torch_compat::set_cuda_device(static_cast<int>(device().index()));
  torch::set_num_threads(1);
  ::testing::TestEventListeners& listeners = ::testing::UnitTest::GetInstance()->listeners();
  if (rank != 0) {
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new RankFailurePrinter);
  }
  const int failed = RUN_ALL_TESTS();
  int any_failed = 0;
  MPI_Allreduce(&failed, &any_failed, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  if (rank == 0 && any_failed) std::fprintf(stderr, "some rank failed a test\n");
  world_comm.reset();
  return any_failed ? 1 : 0;
}
