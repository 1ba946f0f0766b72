// Autograd mappings: forward values and autograd gradients against the unsharded computation.
// Each test builds the per-rank inputs and upstream gradients of every rank, so the expected
// forward and backward results are computed in one process.
#include <numeric>

#include "mpi_test.h"
#include "parallel/mappings.h"

namespace foldtron::testing {
namespace {

constexpr int64_t kB = 2, kH = 3;

torch::Tensor leaf(const torch::Tensor& t) { return t.to(device()).detach().requires_grad_(true); }

// Runs backward of sum(y * g) and returns x's gradient.
torch::Tensor grad_of(const torch::Tensor& x, const torch::Tensor& y, const torch::Tensor& g) {
  (y * g.to(y.device())).sum().backward();
  return x.grad();
}

TEST(Mappings, CopyToGroupAllReducesGradients) {
  const int n = world_size();
  torch::Tensor x = leaf(data(1, {4, kB, kH}));
  torch::Tensor y = copy_to_group(x, world());
  EXPECT_TRUE(close(y, data(1, {4, kB, kH}), 0, 0));
  torch::Tensor expected = torch::zeros({4, kB, kH});
  for (int r = 0; r < n; ++r) expected += data(10 + r, {4, kB, kH});
  EXPECT_TRUE(close(grad_of(x, y, data(10 + world_rank(), {4, kB, kH})), expected, 1e-5, 1e-6));
}

TEST(Mappings, ReduceFromGroupSumsForwardOnly) {
  const int n = world_size();
  torch::Tensor x = leaf(data(20 + world_rank(), {4, kB, kH}));
  torch::Tensor y = reduce_from_group(x, world());
  torch::Tensor expected = torch::zeros({4, kB, kH});
  for (int r = 0; r < n; ++r) expected += data(20 + r, {4, kB, kH});
  EXPECT_TRUE(close(y, expected, 1e-5, 1e-6));
  EXPECT_TRUE(close(grad_of(x, y, data(29, {4, kB, kH})), data(29, {4, kB, kH}), 0, 0));
}

TEST(Mappings, ScatterToSequenceGathersGradients) {
  const int n = world_size();
  const int64_t s = 2 * n;
  torch::Tensor full = data(30, {s, kB, kH});
  torch::Tensor x = leaf(full);
  torch::Tensor y = scatter_to_sequence(x, world());
  EXPECT_TRUE(close(y, full.chunk(n)[world_rank()], 0, 0));
  std::vector<torch::Tensor> grads;
  for (int r = 0; r < n; ++r) grads.push_back(data(31 + r, {2, kB, kH}));
  EXPECT_TRUE(close(grad_of(x, y, grads[static_cast<size_t>(world_rank())]), torch::cat(grads), 0, 0));
}

TEST(Mappings, GatherFromSequenceReduceScattersGradients) {
  const int n = world_size();
  std::vector<torch::Tensor> chunks, grads;
  torch::Tensor grad_sum = torch::zeros({2 * n, kB, kH});
  for (int r = 0; r < n; ++r) {
    chunks.push_back(data(40 + r, {2, kB, kH}));
    grads.push_back(data(50 + r, {2 * n, kB, kH}));
    grad_sum += grads.back();
  }
  const size_t me = static_cast<size_t>(world_rank());
  for (bool reduce_grad : {true, false}) {
    torch::Tensor x = leaf(chunks[me]);
    torch::Tensor y = gather_from_sequence(x, world(), reduce_grad);
    EXPECT_TRUE(close(y, torch::cat(chunks), 0, 0));
    const torch::Tensor expected = reduce_grad ? grad_sum.chunk(n)[world_rank()] : grads[me].chunk(n)[world_rank()];
    EXPECT_TRUE(close(grad_of(x, y, grads[me]), expected, 1e-5, 1e-6)) << "reduce_grad " << reduce_grad;
  }
}

TEST(Mappings, ReduceScatterToSequenceGathersGradients) {
  const int n = world_size();
  torch::Tensor sum = torch::zeros({2 * n, kB, kH});
  std::vector<torch::Tensor> grads;
  for (int r = 0; r < n; ++r) {
    sum += data(60 + r, {2 * n, kB, kH});
    grads.push_back(data(70 + r, {2, kB, kH}));
  }
  torch::Tensor x = leaf(data(60 + world_rank(), {2 * n, kB, kH}));
  torch::Tensor y = reduce_scatter_to_sequence(x, world());
  EXPECT_TRUE(close(y, sum.chunk(n)[world_rank()], 1e-5, 1e-6));
  EXPECT_TRUE(close(grad_of(x, y, grads[static_cast<size_t>(world_rank())]), torch::cat(grads), 0, 0));
}

TEST(Mappings, GatherAndScatterLastDim) {
  const int n = world_size();
  std::vector<torch::Tensor> parts;
  for (int r = 0; r < n; ++r) parts.push_back(data(80 + r, {3, kB, 2}));
  torch::Tensor x = leaf(parts[static_cast<size_t>(world_rank())]);
  torch::Tensor y = gather_last_dim(x, world());
  EXPECT_TRUE(close(y, torch::cat(parts, -1), 0, 0));
  torch::Tensor g = data(89, {3, kB, 2 * n});  // a replicated consumer: the same gradient everywhere
  EXPECT_TRUE(close(grad_of(x, y, g), g.chunk(n, -1)[world_rank()], 0, 0));

  torch::Tensor full = data(90, {3, kB, 2 * n});
  torch::Tensor x2 = leaf(full);
  torch::Tensor y2 = scatter_last_dim(x2, world());
  EXPECT_TRUE(close(y2, full.chunk(n, -1)[world_rank()], 0, 0));
  std::vector<torch::Tensor> grads;
  for (int r = 0; r < n; ++r) grads.push_back(data(91 + r, {3, kB, 2}));
  EXPECT_TRUE(close(grad_of(x2, y2, grads[static_cast<size_t>(world_rank())]), torch::cat(grads, -1), 0, 0));
}

TEST(Mappings, AllToAllSendsGradientsBack) {
  const int n = world_size();
  const int me = world_rank();
  auto rows = [](int i, int j) { return static_cast<int64_t>((2 * i + j) % 3); };  // zeros included
  // Unsharded view: x_i is the concatenation of blocks (i -> j); out_j concatenates (i -> j) over i.
  auto block = [](int i, int j, int64_t r) { return data(1000 + 10 * i + j, {r, kH}); };
  std::vector<int64_t> input_rows, output_rows;
  std::vector<torch::Tensor> mine, arriving;
  for (int j = 0; j < n; ++j) {
    input_rows.push_back(rows(me, j));
    output_rows.push_back(rows(j, me));
    mine.push_back(block(me, j, rows(me, j)));
    arriving.push_back(block(j, me, rows(j, me)));
  }
  torch::Tensor x = leaf(torch::cat(mine));
  torch::Tensor y = all_to_all(x, world(), output_rows, input_rows);
  EXPECT_TRUE(close(y, torch::cat(arriving), 0, 0));
  // Upstream gradient of out_j is G_j; the gradient of block (me -> j) is G_j's rows from me.
  auto upstream = [&](int j) {
    int64_t total = 0;
    for (int i = 0; i < n; ++i) total += rows(i, j);
    return data(2000 + j, {total, kH});
  };
  std::vector<torch::Tensor> expected;
  for (int j = 0; j < n; ++j) {
    int64_t offset = 0;
    for (int i = 0; i < me; ++i) offset += rows(i, j);
    expected.push_back(upstream(j).narrow(0, offset, rows(me, j)));
  }
  EXPECT_TRUE(close(grad_of(x, y, upstream(me)), torch::cat(expected), 0, 0));
}

TEST(Mappings, GatherRowsReduceScattersGradients) {
  const int n = world_size();
  std::vector<int64_t> rows;
  std::vector<torch::Tensor> parts;
  for (int r = 0; r < n; ++r) {
    rows.push_back(r % 3);
    parts.push_back(data(300 + r, {r % 3, kH}));
  }
  const int64_t total = std::accumulate(rows.begin(), rows.end(), int64_t{0});
  torch::Tensor x = leaf(parts[static_cast<size_t>(world_rank())]);
  torch::Tensor y = gather_rows(x, world(), rows);
  EXPECT_TRUE(close(y, torch::cat(parts), 0, 0));
  torch::Tensor grad_sum = torch::zeros({total, kH});
  for (int r = 0; r < n; ++r) grad_sum += data(400 + r, {total, kH});
  const int64_t offset = std::accumulate(rows.begin(), rows.begin() + world_rank(), int64_t{0});
  EXPECT_TRUE(close(grad_of(x, y, data(400 + world_rank(), {total, kH})),
                    grad_sum.narrow(0, offset, rows[static_cast<size_t>(world_rank())]), 1e-5, 1e-6));
}

}  // namespace
}  // namespace foldtron::testing
