// Communicator collectives at any world size against a single-process computation: every rank
// builds every rank's input (deterministic data) and computes the expected result alone.
// Uneven and zero-size splits, every dtype, non-contiguous inputs, and the async forms.
#include <numeric>

#include "mpi_test.h"

namespace foldtron::testing {
namespace {

const std::vector<torch::ScalarType> kDtypes{torch::kFloat, torch::kDouble, torch::kBFloat16, torch::kHalf,
                                             torch::kInt, torch::kLong};

double tolerance(torch::ScalarType dtype) {
  if (dtype == torch::kBFloat16) return 2e-2;
  if (dtype == torch::kHalf) return 2e-3;
  if (dtype == torch::kFloat) return 1e-5;
  return 1e-12;
}

torch::Tensor on_device(const torch::Tensor& t) { return t.to(device()); }

// Rows rank r holds in the uneven tests: 0, 1, 2, 0, 1, 2, ... (so some ranks hold none).
int64_t uneven_rows(int r) { return r % 3; }

TEST(Comm, AllReduceEveryDtypeAndOp) {
  const int n = world_size();
  for (torch::ScalarType dtype : kDtypes) {
    for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kAvg, ReduceOp::kMax}) {
      if (op == ReduceOp::kAvg && !c10::isFloatingType(dtype)) continue;
      SCOPED_TRACE(fmt::format("{} {}", c10::toString(dtype), reduce_op_name(op)));
      std::vector<torch::Tensor> inputs;
      for (int r = 0; r < n; ++r) inputs.push_back(data(100 + r, {5, 3}, dtype));
      torch::Tensor stacked = torch::stack(inputs).to(torch::kDouble);
      torch::Tensor expected = op == ReduceOp::kMax ? std::get<0>(stacked.max(0)) : stacked.sum(0);
      if (op == ReduceOp::kAvg) expected = expected / n;
      torch::Tensor mine = on_device(inputs[static_cast<size_t>(world_rank())]);
      world().all_reduce(mine, op);
      EXPECT_TRUE(close(mine, expected.to(dtype), tolerance(dtype), tolerance(dtype)));
    }
  }
}

TEST(Comm, AllReduceNonContiguousWritesThroughTheView) {
  const int n = world_size();
  torch::Tensor base = on_device(data(7 + world_rank(), {4, 6}));
  torch::Tensor view = base.t();  // non-contiguous [6, 4]
  ASSERT_FALSE(view.is_contiguous());
  world().all_reduce(view);
  torch::Tensor expected = torch::zeros({4, 6}, torch::kDouble);
  for (int r = 0; r < n; ++r) expected += data(7 + r, {4, 6}).to(torch::kDouble);
  EXPECT_TRUE(close(base, expected, 1e-5, 1e-5));
}

TEST(Comm, BroadcastFromEveryRoot) {
  for (int root = 0; root < world_size(); ++root) {
    for (torch::ScalarType dtype : kDtypes) {
      torch::Tensor mine = on_device(data(world_rank() == root ? 55 : 900 + world_rank(), {3, 4}, dtype));
      torch::Tensor view = mine.t();
      world().broadcast(view, root);
      EXPECT_TRUE(close(mine, data(55, {3, 4}, dtype), 0, 0)) << "root " << root << " " << c10::toString(dtype);
    }
  }
}

TEST(Comm, AllGatherEqualRows) {
  const int n = world_size();
  for (torch::ScalarType dtype : kDtypes) {
    torch::Tensor mine = on_device(data(20 + world_rank(), {2, 3, 2}, dtype));
    std::vector<torch::Tensor> all;
    for (int r = 0; r < n; ++r) all.push_back(data(20 + r, {2, 3, 2}, dtype));
    EXPECT_TRUE(close(world().all_gather(mine), torch::cat(all), 0, 0)) << c10::toString(dtype);
  }
}

TEST(Comm, AllGatherUnevenAndZeroRows) {
  const int n = world_size();
  std::vector<int64_t> rows;
  std::vector<torch::Tensor> all;
  for (int r = 0; r < n; ++r) {
    rows.push_back(uneven_rows(r));
    all.push_back(data(30 + r, {uneven_rows(r), 4}));
  }
  torch::Tensor mine = on_device(all[static_cast<size_t>(world_rank())]);
  EXPECT_TRUE(close(world().all_gather(mine, rows), torch::cat(all), 0, 0));
  EXPECT_TRUE(close(world().all_gather_v(mine), torch::cat(all), 0, 0));  // sizes exchanged
  // Non-contiguous input of a transposed tensor.
  torch::Tensor wide = on_device(data(31, {4, uneven_rows(world_rank())})).t();
  std::vector<torch::Tensor> wides;
  for (int r = 0; r < n; ++r) wides.push_back(data(31, {4, uneven_rows(r)}).t());
  EXPECT_TRUE(close(world().all_gather_v(wide), torch::cat(wides), 0, 0));
}

TEST(Comm, ReduceScatterEqualAndUneven) {
  const int n = world_size();
  for (torch::ScalarType dtype : {torch::kFloat, torch::kDouble, torch::kBFloat16, torch::kLong}) {
    torch::Tensor sum = torch::zeros({2 * n, 3}, torch::kDouble);
    for (int r = 0; r < n; ++r) sum += data(40 + r, {2 * n, 3}, dtype).to(torch::kDouble);
    torch::Tensor out = world().reduce_scatter(on_device(data(40 + world_rank(), {2 * n, 3}, dtype)));
    EXPECT_TRUE(close(out, sum.chunk(n)[world_rank()].to(dtype), tolerance(dtype), tolerance(dtype)))
        << c10::toString(dtype);
  }
  std::vector<int64_t> rows;
  for (int r = 0; r < n; ++r) rows.push_back(uneven_rows(r));
  const int64_t total = std::accumulate(rows.begin(), rows.end(), int64_t{0});
  torch::Tensor sum = torch::zeros({total, 5}, torch::kDouble);
  for (int r = 0; r < n; ++r) sum += data(50 + r, {total, 5}).to(torch::kDouble);
  const int64_t offset = std::accumulate(rows.begin(), rows.begin() + world_rank(), int64_t{0});
  torch::Tensor out = world().reduce_scatter(on_device(data(50 + world_rank(), {total, 5})), rows, ReduceOp::kAvg);
  EXPECT_TRUE(close(out, sum.narrow(0, offset, rows[static_cast<size_t>(world_rank())]) / n, 1e-5, 1e-5));
}

TEST(Comm, AllToAllVariableSplitsWithZeros) {
  const int n = world_size();
  // Rank i sends (i + j) % 3 rows to rank j; row values identify (sender, receiver, index).
  auto rows_from_to = [](int i, int j) { return static_cast<int64_t>((i + j) % 3); };
  auto block = [](int i, int j, int64_t rows) {
    return torch::arange(rows * 2, torch::kFloat).reshape({rows, 2}) + 1000.0 * i + 100.0 * j;
  };
  const int me = world_rank();
  std::vector<int64_t> input_rows, output_rows;
  std::vector<torch::Tensor> send_blocks, expected_blocks;
  for (int j = 0; j < n; ++j) {
    input_rows.push_back(rows_from_to(me, j));
    output_rows.push_back(rows_from_to(j, me));
    send_blocks.push_back(block(me, j, rows_from_to(me, j)));
    expected_blocks.push_back(block(j, me, rows_from_to(j, me)));
  }
  for (torch::ScalarType dtype : kDtypes) {
    torch::Tensor out = world().all_to_all(on_device(torch::cat(send_blocks).to(dtype)), input_rows, output_rows);
    EXPECT_TRUE(close(out, torch::cat(expected_blocks).to(dtype), 0, 0)) << c10::toString(dtype);
  }
}

TEST(Comm, SendRecvRing) {
  const int n = world_size();
  if (n == 1) GTEST_SKIP() << "needs two ranks";
  const int next = (world_rank() + 1) % n;
  const int prev = (world_rank() + n - 1) % n;
  torch::Tensor target = on_device(torch::zeros({3, 5}));
  torch::Tensor view = target.t();  // receive into a non-contiguous view
  // Every rank sends and receives at once: the exchange must be one operation (see send_recv).
  world().send_recv_async(on_device(data(60 + world_rank(), {5, 3})), next, view, prev, 7)->wait();
  EXPECT_TRUE(close(view, data(60 + prev, {5, 3}), 0, 0));
}

TEST(Comm, SendRecvOneWayPairs) {
  // Even ranks send to the next odd rank (as pipeline stages pass activations forward).
  const int n = world_size();
  if (n < 2) GTEST_SKIP() << "needs two ranks";
  const int me = world_rank();
  if (me % 2 == 0 && me + 1 < n) {
    world().send(on_device(data(65 + me, {4, 2}, torch::kBFloat16)), me + 1, 3);
  } else if (me % 2 == 1) {
    torch::Tensor received = on_device(torch::zeros({4, 2}, torch::kBFloat16));
    world().recv(received, me - 1, 3);
    EXPECT_TRUE(close(received, data(65 + me - 1, {4, 2}, torch::kBFloat16), 0, 0));
  }
}

TEST(Comm, BatchedSendsAndReceivesWithBothNeighbours) {
  // A pipeline tick: activations to the next rank and gradients to the previous one, both
  // received in the same operation (with two ranks both neighbours are one peer).
  const int n = world_size();
  if (n < 2) GTEST_SKIP() << "needs two ranks";
  const int me = world_rank(), next = (me + 1) % n, prev = (me + n - 1) % n;
  torch::Tensor from_prev = on_device(torch::zeros({3, 4})), from_next = on_device(torch::zeros({2}, torch::kBFloat16));
  world()
      .batch_p2p_async({{true, on_device(data(100 + me, {3, 4})), next},
                        {true, on_device(data(110 + me, {2}, torch::kBFloat16)), prev},
                        {false, from_prev, prev},
                        {false, from_next, next}})
      ->wait();
  EXPECT_TRUE(close(from_prev, data(100 + prev, {3, 4}), 0, 0));
  EXPECT_TRUE(close(from_next, data(110 + next, {2}, torch::kBFloat16), 0, 0));
}

TEST(Comm, AsyncOperationsCompleteInAnyWaitOrder) {
  const int n = world_size();
  torch::Tensor a = on_device(data(70 + world_rank(), {8}));
  WorkPtr reduce = world().all_reduce_async(a);
  WorkPtr gather = world().all_gather_async(on_device(data(80 + world_rank(), {2, 2})));
  WorkPtr scatter = world().reduce_scatter_async(on_device(data(90 + world_rank(), {n, 3})));
  torch::Tensor scattered = scatter->wait();
  torch::Tensor gathered = gather->wait();
  reduce->wait();
  torch::Tensor sum_a = torch::zeros({8}, torch::kDouble), sum_s = torch::zeros({n, 3}, torch::kDouble);
  std::vector<torch::Tensor> all;
  for (int r = 0; r < n; ++r) {
    sum_a += data(70 + r, {8}).to(torch::kDouble);
    sum_s += data(90 + r, {n, 3}).to(torch::kDouble);
    all.push_back(data(80 + r, {2, 2}));
  }
  EXPECT_TRUE(close(a, sum_a, 1e-5, 1e-5));
  EXPECT_TRUE(close(gathered, torch::cat(all), 0, 0));
  EXPECT_TRUE(close(scattered, sum_s.chunk(n)[world_rank()], 1e-5, 1e-5));
}

TEST(Comm, IntsAndBarrier) {
  const auto all = world().all_gather_ints({world_rank(), 10 * world_rank()});
  ASSERT_EQ(static_cast<int>(all.size()), world_size());
  for (int r = 0; r < world_size(); ++r) EXPECT_EQ(all[static_cast<size_t>(r)], (std::vector<int64_t>{r, 10 * r}));
  world().barrier();
}

}  // namespace
}  // namespace foldtron::testing
