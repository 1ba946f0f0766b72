// MoE layer pieces: capacity and dropping on a hand-checked example, expert selection for every
// scoring mode, the load-balancing, per-sequence and z losses and the expert-bias update against
// hand computations, and the distributed layer (both dispatchers, dropless, dropping and
// pad-to-capacity, ranks and experts with zero tokens) against the single-process layer: outputs,
// input gradients and every parameter gradient, for every folded layout of the job's world size.
// Also: the dropless gather-only dispatch and combine against the direct sum, and the fused
// SwiGLU and expert weight gradients against fp32, and the grouped weight-gradient kernel (CUTLASS
// builds) for each of its tile shapes.
#include <cmath>
#include <numeric>

#include "layers/context.h"
#include "moe/dispatcher.h"
#include "moe/experts.h"
#include "moe/moe_layer.h"
#ifdef FOLDTRON_WITH_GROUPED_WGRAD
#include <c10/cuda/CUDAStream.h>

#include "moe/grouped_wgrad_cuda.h"
#endif
#include "mpi_test.h"
#include "optim/param_buffer.h"
#include "parallel/process_groups.h"

namespace foldtron::testing {
namespace {

std::unique_ptr<ProcessGroups> single_process_groups() {
  return std::make_unique<ProcessGroups>(Topology(ParallelLayout{}), comm_options(), MPI_COMM_SELF);
}

LayerContext context(ProcessGroups& groups, ParamRegistry* registry, bool sequence_parallel) {
  LayerContext ctx;
  ctx.tp = &groups.tp();
  ctx.sequence_parallel = sequence_parallel && groups.tp().size() > 1;
  ctx.seed = 7;
  ctx.device = device();
  ctx.registry = registry;
  ctx.groups = &groups;
  return ctx;
}

TEST(MoeExperts, SwigluMatchesAnFp32ComputationForwardAndBackward) {
  // bf16 on the test device: with --device=cuda the fused kernels (F a multiple of 8: 16-byte
  // loads; F = 13: one element at a time; no rows), else torch's operations.
  for (const auto& [rows, ffn] : std::vector<std::pair<int64_t, int64_t>>{{37, 24}, {5, 13}, {0, 16}, {300, 1000}}) {
    SCOPED_TRACE(::testing::Message() << rows << " rows, F " << ffn);
    torch::manual_seed(rows + ffn);
    const torch::Tensor gate_up = (torch::randn({rows, 2 * ffn}) * 3).to(torch::kBFloat16).to(device());
    const torch::Tensor grad_out = torch::randn({rows, ffn}).to(torch::kBFloat16).to(device());
    const torch::Tensor input = gate_up.clone().requires_grad_(true);
    const torch::Tensor out = swiglu(input);
    out.backward(grad_out);
    const torch::Tensor reference_input = gate_up.to(torch::kFloat).cpu().requires_grad_(true);
    const auto halves = reference_input.chunk(2, -1);
    const torch::Tensor reference = torch::silu(halves[0]) * halves[1];
    reference.backward(grad_out.to(torch::kFloat).cpu());
    ASSERT_EQ(out.scalar_type(), torch::kBFloat16);
    ASSERT_EQ(out.sizes(), reference.sizes());
    // The fused kernels round once (fp32 arithmetic, bf16 result): within 2^-7 relative. Torch's
    // bf16 operations round after each of up to four steps, and silu' passes through zero, so
    // there: 2^-5 relative, plus 1e-3 of the largest value.
    const double rtol = device().is_cuda() ? 1.0 / 128 : 1.0 / 32;
    const auto close = [rtol](const torch::Tensor& got, const torch::Tensor& want) {
      if (want.numel() == 0) return got.numel() == 0;
      const torch::Tensor error = (got.cpu().to(torch::kFloat) - want).abs();
      return (error <= want.abs() * rtol + 1e-3 * want.abs().max().clamp_min(1e-6)).all().item<bool>();
    };
    EXPECT_TRUE(close(out.detach(), reference.detach()));
    EXPECT_TRUE(close(input.grad(), reference_input.grad()));
  }
}

// Counts made on the device (a dispatch without exchange) reach the host when first read, are
// checked against the rows the dispatch made, and survive an autograd context's saved_data.
TEST(MoeExperts, CountsMadeOnTheDeviceReachTheHostCheckedAndSaved) {
  const torch::Tensor made = torch::tensor({3, 0, 5}, torch::kLong).to(device());
  const ExpertCounts counts = ExpertCounts::from_device(made, 8);
  EXPECT_EQ(counts.size(), 3);
  EXPECT_TRUE(torch::equal(counts.row_ends(device()).cpu(), torch::tensor({3, 3, 8}, torch::kInt)));
  EXPECT_EQ(counts.host(), (std::vector<int64_t>{3, 0, 5}));
  const ExpertCounts again = ExpertCounts::from_ivalue(counts.to_ivalue());
  EXPECT_EQ(&again.host(), &counts.host());  // one state, read once
  const ExpertCounts known(std::vector<int64_t>{3, 0, 5});
  EXPECT_EQ(known.size(), 3);
  EXPECT_TRUE(torch::equal(known.row_ends(device()).cpu(), torch::tensor({3, 3, 8}, torch::kInt)));
  EXPECT_THROW(ExpertCounts::from_device(made, 9).host(), InternalError);  // 8 rows, not the 9 promised
}

// The buffers' MainGradWriter, counting the fused weight-gradient writes that reach them: whether
// the layer took the fused path.
class CountingWriter : public MainGradWriter {
 public:
  explicit CountingWriter(ParamBuffers& buffers) : buffers_(buffers) {}
  bool write_main_grad(const torch::Tensor& param,
                       const std::function<void(const torch::Tensor& main_grad, bool accumulate)>& write) override {
    const bool taken = buffers_.write_main_grad(param, write);
    writes += taken ? 1 : 0;
    return taken;
  }
  torch::ScalarType main_grad_dtype() const override { return buffers_.main_grad_dtype(); }
  int writes = 0;

 private:
  ParamBuffers& buffers_;
};

TEST(MoeExperts, FusedWeightGradientsGoStraightIntoFp32MainGradients) {
  // Gradient-accumulation fusion: with the buffers' main-gradient slots, the grouped weight
  // gradient is one fp32-output GEMM per expert into the main gradient (written on the first
  // micro-batch over stale values, added on the second; zeros for an expert without rows).
  // Against the same bf16 products summed in fp64 it is exact to fp32 rounding, where a bf16
  // gradient widened afterwards (fusion off) carries bf16 rounding (about 2^-9). bf16 main
  // gradients (train.main_grads_dtype) are written and added by bf16-output GEMMs: bf16 rounding.
  if (!device().is_cuda()) GTEST_SKIP() << "the grouped GEMM path runs for bf16 with --device=cuda";
  auto groups = single_process_groups();
  const std::vector<int64_t> counts{40, 0, 72, 16};
  const int64_t rows = 128, n = 96, k = 64;
  for (const auto& [fuse, grad_dtype] : {std::pair{true, torch::kFloat}, std::pair{false, torch::kFloat},
                                         std::pair{true, torch::kBFloat16}}) {
    SCOPED_TRACE(fmt::format("{}, {} main gradients", fuse ? "fused" : "not fused", c10::toString(grad_dtype)));
    torch::manual_seed(3);
    const torch::Tensor weight = (torch::randn({4, n, k}) * 0.1).to(torch::kBFloat16).to(device()).requires_grad_(true);
    ParamRegistry registry;
    BufferOptions options;
    options.fuse_wgrad = fuse;
    options.grad_dtype = grad_dtype;
    ParamBuffers buffers({weight}, registry, *groups, options);
    ASSERT_EQ(buffers.main_grad(weight).scalar_type(), grad_dtype);
    CountingWriter counting(buffers);
    if (fuse) registry.set_main_grad_writer(&counting);
    buffers.main_grad(weight).fill_(std::nan(""));  // stale values: the first gradient must overwrite them
    const torch::Tensor weight64 = weight.detach().cpu().to(torch::kDouble);
    torch::Tensor expected = torch::zeros({4, n, k}, torch::kDouble);
    for (int micro = 0; micro < 2; ++micro) {
      buffers.set_sync(micro == 1);
      const torch::Tensor x = torch::randn({rows, k}).to(torch::kBFloat16).to(device()).requires_grad_(true);
      const torch::Tensor dy = torch::randn({rows, n}).to(torch::kBFloat16).to(device());
      // The counts on the host, then made on the device (a dispatch without exchange): the
      // weight gradient reads the device's copy in backward.
      const ExpertCounts given =
          micro == 0 ? ExpertCounts(counts) : ExpertCounts::from_device(torch::tensor(counts).to(device()), rows);
      grouped_linear(x, weight, given, &registry).backward(dy);
      const torch::Tensor x64 = x.detach().cpu().to(torch::kDouble), dy64 = dy.cpu().to(torch::kDouble);
      torch::Tensor dx_expected = torch::zeros({rows, k}, torch::kDouble);
      int64_t start = 0;
      for (size_t e = 0; e < counts.size(); ++e) {
        const int64_t c = counts[e];
        const auto i = static_cast<int64_t>(e);
        expected[i] += dy64.narrow(0, start, c).t().mm(x64.narrow(0, start, c));
        dx_expected.narrow(0, start, c).copy_(dy64.narrow(0, start, c).mm(weight64[i]));
        start += c;
      }
      const torch::Tensor dx = x.grad().cpu().to(torch::kDouble);
      EXPECT_LT(((dx - dx_expected).norm() / dx_expected.norm()).item<double>(), 1e-2) << "input gradient";
    }
    buffers.finish_grad_sync();
    if (fuse) registry.set_main_grad_writer(&buffers);
    EXPECT_EQ(counting.writes, fuse ? 2 : 0) << "the layer writes the main gradient itself once a micro-batch";
    const torch::Tensor got = buffers.main_grad(weight).cpu().to(torch::kDouble);
    EXPECT_TRUE(got[1].eq(0).all().item<bool>()) << "an expert without rows gets zeros over stale values";
    const double error = ((got - expected).norm() / expected.norm()).item<double>();
    if (fuse && grad_dtype == torch::kFloat) {
      EXPECT_LT(error, 1e-5);
      EXPECT_FALSE(weight.grad().defined()) << "autograd's placeholder is dropped";
    } else {
      EXPECT_GT(error, 1e-4) << "a bf16 gradient (widened afterwards, or kept) carries bf16 rounding";
      EXPECT_LT(error, 1e-2);
    }
  }
}

TEST(MoeExperts, GroupedWeightGradientKernelWritesAndAddsForEveryTileShapeAndOrder) {
  // The CUTLASS kernel alone, for two sets of experts: four of uneven rows (none a multiple of the
  // K tile, 64), one without rows between others; and 40 of 0-48 rows (more than the 32 experts
  // CUTLASS's scheduler looks ahead over at once). m and n are not multiples of any tile. Adding
  // into old fp32 values and writing over NaN (a kernel that read them when writing would show
  // it), against the products summed in fp64; an expert without rows is left as it was either way
  // (the caller zeroes it when writing).
#ifndef FOLDTRON_WITH_GROUPED_WGRAD
  GTEST_SKIP() << "built without CUTLASS (FOLDTRON_CUTLASS_DIR)";
#else
  if (!device().is_cuda() || !grouped_wgrad_supported()) GTEST_SKIP() << "the kernel runs on Hopper (--device=cuda)";
  std::vector<int64_t> many;
  for (int64_t e = 0; e < 40; ++e) many.push_back(e * 13 % 49);  // 0 for e = 0 and 49 apart
  const int64_t m = 136, n = 264;
  const auto cuda = torch::TensorOptions().device(device());
  std::vector<WgradConfig> configs;
  for (const WgradTiles tiles : kAllWgradTiles) configs.push_back({tiles, false, 1});
  configs.push_back({WgradTiles::kCooperative128x256, true, 4});  // the other order, in groups
  for (const std::vector<int64_t>& counts : {std::vector<int64_t>{200, 0, 37, 131}, many}) {
    const auto experts = static_cast<int64_t>(counts.size());
    const int64_t rows = std::accumulate(counts.begin(), counts.end(), int64_t{0});
    torch::manual_seed(11);
    const torch::Tensor dy = torch::randn({rows, m}, cuda).to(torch::kBFloat16);
    const torch::Tensor x = torch::randn({rows, n}, cuda).to(torch::kBFloat16);
    const torch::Tensor row_ends = torch::tensor(counts).cumsum(0).to(torch::kInt).to(device());
    const torch::Tensor old = torch::randn({experts, m, n}, cuda);
    const torch::Tensor old64 = old.cpu().to(torch::kDouble);
    const torch::Tensor dy64 = dy.cpu().to(torch::kDouble), x64 = x.cpu().to(torch::kDouble);
    torch::Tensor products = torch::zeros({experts, m, n}, torch::kDouble);
    int64_t start = 0;
    for (int64_t e = 0; e < experts; ++e) {
      products[e] = dy64.narrow(0, start, counts[e]).t().mm(x64.narrow(0, start, counts[e]));
      start += counts[e];
    }
    for (const WgradConfig& config : configs) {
      const torch::Tensor buffer = torch::empty(
          {static_cast<int64_t>(grouped_wgrad_buffer_bytes(static_cast<int>(experts), config))},
          cuda.dtype(torch::kByte));
      for (const bool accumulate : {false, true}) {
        SCOPED_TRACE(fmt::format("{} experts, {}, {}", experts, wgrad_config_name(config),
                                 accumulate ? "adding" : "writing"));
        const torch::Tensor out = accumulate ? old.clone() : torch::full({experts, m, n}, std::nan(""), cuda);
        grouped_wgrad_cuda(dy.data_ptr(), x.data_ptr(), row_ends.data_ptr<int32_t>(), out.data_ptr<float>(),
                           static_cast<int>(experts), m, n, accumulate, buffer.data_ptr(), config,
                           c10::cuda::getCurrentCUDAStream().stream());
        const torch::Tensor got = out.cpu().to(torch::kDouble);
        for (int64_t e = 0; e < experts; ++e) {
          if (counts[e] == 0) {
            EXPECT_TRUE(accumulate ? got[e].equal(old64[e]) : got[e].isnan().all().item<bool>())
                << "expert " << e << " has no rows";
            continue;
          }
          const torch::Tensor want = accumulate ? old64[e] + products[e] : products[e];
          EXPECT_LT(((got[e] - want).norm() / want.norm()).item<double>(), 1e-5) << "expert " << e;
        }
      }
    }
  }
#endif
}

TEST(MoeDispatcher, DroplessDispatchAndCombineMatchTheDirectSum) {
  // Dropless, every expert on this rank: dispatch copies each token into its k rows and combine
  // sums them back, both as gathers (rows_of_token). Expert e scales its rows by c_e, so
  // y[t] = sum_e p[t, e] c_e x[t]; dx and dp follow by hand.
  const int64_t n = 6, experts = 4, k = 2, h = 3;
  torch::manual_seed(11);
  const auto dopt = torch::TensorOptions().dtype(torch::kDouble).device(device());
  std::vector<std::vector<int64_t>> chosen;
  torch::Tensor map = torch::zeros({n, experts}, torch::kBool);
  torch::Tensor p = torch::zeros({n, experts}, torch::kDouble);
  for (int64_t t = 0; t < n; ++t) {
    const torch::Tensor picks = torch::randperm(experts).narrow(0, 0, k);
    for (int64_t j = 0; j < k; ++j) {
      map[t][picks[j].item<int64_t>()] = true;
      p[t][picks[j].item<int64_t>()] = 0.1 + 0.2 * static_cast<double>(t + j);
    }
  }
  const torch::Tensor scale = torch::tensor({0.5, -1.5, 2.0, 3.0}, torch::kDouble);
  const torch::Tensor x0 = torch::randn({n, h}, torch::kDouble);
  const torch::Tensor dy = torch::randn({n, h}, torch::kDouble);

  const Permutation perm = permute_by_map(map.to(device()), p.to(device()), k);
  ASSERT_TRUE(perm.rows_of_token.defined());
  ASSERT_EQ(perm.rows_of_token.sizes(), (std::vector<int64_t>{n, k}));
  const torch::Tensor owner = perm.token_index.index_select(0, perm.rows_of_token.reshape({-1})).view({n, k}).cpu();
  EXPECT_TRUE(torch::equal(owner, torch::arange(n, torch::kLong).unsqueeze(1).expand({n, k})));
  EXPECT_FALSE(permute_by_map(map.to(device()), p.to(device())).rows_of_token.defined());

  auto groups = single_process_groups();
  // Each dispatcher with the copies per token promised (no host read of the counts in dispatch)
  // and not (the counts read on the host, index_add's sum): the same results.
  const std::pair<Dispatcher, int64_t> runs[] = {
      {Dispatcher::kAllGather, k}, {Dispatcher::kAllToAll, k}, {Dispatcher::kAllGather, 0}, {Dispatcher::kAllToAll, 0}};
  for (const auto& [kind, copies] : runs) {
    SCOPED_TRACE(std::string(kind == Dispatcher::kAllGather ? "all-gather" : "all-to-all") + ", copies per token " +
                 std::to_string(copies));
    const auto dispatcher = make_dispatcher(kind, *groups, ExpertShard{experts, 0, 0, 1});
    Routing routing;
    routing.copies_per_token = copies;
    routing.routing_map = map.to(device());
    routing.probs = p.to(dopt).clone().requires_grad_(true);  // a leaf of its own (.to may return p)
    const torch::Tensor x = x0.to(dopt).clone().requires_grad_(true);
    const Dispatched d = dispatcher->dispatch(x, routing);
    ASSERT_EQ(d.tokens.size(0), n * k);
    std::vector<torch::Tensor> outs;
    int64_t first = 0;
    for (int64_t e = 0; e < experts; ++e) {
      outs.push_back(d.tokens.narrow(0, first, d.counts.host()[e]) * scale[e].item<double>());
      first += d.counts.host()[e];
    }
    const torch::Tensor y = dispatcher->combine(torch::cat(outs, 0), d);
    EXPECT_EQ(y.grad_fn()->name().find("SumCopies") != std::string::npos, copies > 0) << y.grad_fn()->name();
    y.backward(dy.to(dopt));
    const torch::Tensor factor = (p * scale).sum(1, true);  // [n, 1]
    EXPECT_TRUE(close(y.detach().cpu(), factor * x0, 1e-12, 1e-12));
    EXPECT_TRUE(close(x.grad().cpu(), factor * dy, 1e-12, 1e-12));
    const torch::Tensor dp = map.to(torch::kDouble) * scale * (x0 * dy).sum(1, true);  // [n, E]
    EXPECT_TRUE(close(routing.probs.grad().cpu(), dp, 1e-12, 1e-12));
  }
}

TEST(MoeDispatcher, PermutationWithoutASortEqualsTheSortedOne) {
  // With k copies of every token promised, the rows are placed by running counts; without the
  // promise, by a stable sort. Both must list the same copies in (expert, token) order, with
  // uneven experts, experts that get nothing (one in the middle) and k of 1 to 3; and for one
  // token, and for one local expert.
  struct Case {
    int64_t n, experts, k;
  };
  for (const Case c : {Case{37, 8, 1}, Case{37, 8, 2}, Case{37, 8, 3}, Case{1, 8, 2}, Case{37, 1, 1}}) {
    const int64_t n = c.n, experts = c.experts, k = c.k;
    SCOPED_TRACE(fmt::format("{} tokens, {} experts, k {}", n, experts, k));
    torch::manual_seed(5 + k);
    // With 8 experts: experts 3 and 7 never picked, expert 1 favoured.
    const torch::Tensor bias = experts == 8 ? torch::tensor({0., 0.8, 0., -9., 0., 0., 0., -9.}) : torch::zeros({experts});
    const torch::Tensor scores = torch::rand({n, experts}) + bias;
    const torch::Tensor picked = std::get<1>(scores.topk(k, 1));
    const torch::Tensor map = torch::zeros({n, experts}, torch::kBool).scatter(1, picked, true).to(device());
    const torch::Tensor probs = torch::rand({n, experts}, torch::kDouble).to(device());  // distinct weights
    const Permutation sorted = permute_by_map(map, probs);
    const Permutation counted = permute_by_map(map, probs, k);
    EXPECT_FALSE(sorted.rows_of_token.defined());
    ASSERT_TRUE(counted.rows_of_token.defined());
    EXPECT_EQ(counted.counts.host(), sorted.counts.host());
    if (experts == 8) {
      EXPECT_EQ(sorted.counts.host()[3] + sorted.counts.host()[7], 0);
    }
    EXPECT_TRUE(torch::equal(counted.token_index.cpu(), sorted.token_index.cpu()));
    EXPECT_TRUE(torch::equal(counted.weights.cpu(), sorted.weights.cpu()));  // the right expert of each row
    // Token t's rows, in expert order: where its copies were placed.
    const torch::Tensor by_token = std::get<1>(sorted.token_index.cpu().sort(/*stable=*/true, 0, false)).view({n, k});
    EXPECT_TRUE(torch::equal(counted.rows_of_token.cpu(), by_token));
  }
  // A broken promise (token 5 has one copy of two) keeps every index inside the tensors and is
  // reported when the counts reach the host.
  const int64_t n = 37, experts = 8;
  torch::Tensor map = torch::zeros({n, experts}, torch::kBool);
  map.narrow(1, 0, 2).fill_(true);
  map[5][1] = false;
  const Permutation broken = permute_by_map(map.to(device()), torch::rand({n, experts}).to(device()), 2);
  EXPECT_LT(broken.rows_of_token.max().item<int64_t>(), 2 * n);
  try {
    broken.counts.host();
    ADD_FAILURE() << "the counts' sum was not checked";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("add up to 73, not the 74"), std::string::npos) << e.what();
  }
}

TEST(MoeDispatcher, WeightedSumOfCopiesMatchesDoubleInBf16AndFp32) {
  // Each token's k rows weighted and summed, and both gradients, against a double computation on
  // the same values. With --device=cuda the kernels run (h 64: 16-byte packs; h 37: one element at
  // a time), else torch's operations; torch's operations on the device too (use_kernels false).
  const int64_t n = 13, k = 3;
  const torch::Tensor order = torch::randperm(n * k, at::detail::createCPUGenerator(21), torch::kLong);
  const torch::Tensor rows_of_token = order.view({n, k});  // token t's copies: rows order[t k .. t k + k)
  const torch::Tensor token_index = torch::empty({n * k}, torch::kLong).index_put_(
      {order}, torch::arange(n, torch::kLong).repeat_interleave(k));
  for (const torch::ScalarType type : {torch::kBFloat16, torch::kFloat}) {
    for (const int64_t h : {64, 37}) {
      const torch::Tensor rows0 = (3.0 * data(22 + h, {n * k, h})).to(type);  // the values both sides see
      const torch::Tensor weights0 = data(23, {n * k}).abs();
      const torch::Tensor dy = data(24 + h, {n, h}).to(type);
      const torch::Tensor w64 = weights0.to(torch::kDouble).unsqueeze(1), x64 = rows0.to(torch::kDouble);
      const torch::Tensor want = (x64 * w64).index_select(0, order).view({n, k, h}).sum(1);
      const torch::Tensor dy_rows = dy.to(torch::kDouble).index_select(0, token_index);  // [P, h]
      const torch::Tensor want_rows_grad = dy_rows * w64, want_weights_grad = (dy_rows * x64).sum(1);
      for (const bool use_kernels : {true, false}) {
        SCOPED_TRACE(::testing::Message() << type << ", h " << h << (use_kernels ? ", kernels" : ", torch"));
        const torch::Tensor rows = rows0.to(device()).clone().requires_grad_(true);  // leaves of their own
        const torch::Tensor weights = weights0.to(device()).clone().requires_grad_(true);
        const torch::Tensor out =
            weighted_sum_copies(rows, weights, token_index.to(device()), rows_of_token.to(device()), use_kernels);
        const bool fused = use_kernels && device().is_cuda();
        EXPECT_EQ(out.grad_fn()->name().find("FusedWeightedSum") != std::string::npos, fused) << out.grad_fn()->name();
        ASSERT_EQ(out.scalar_type(), type);
        out.backward(dy.to(device()));
        // The kernels round once to the rows' type (2^-8 relative in bf16); torch's operations
        // round the weights and the products to bf16 before the sum (2^-8 of each of the k = 3
        // terms), which may cancel: 2^-7 relative, and 3 2^-8 < 2^-6 of the largest term.
        const bool bf16 = type == torch::kBFloat16;
        const double rtol = !bf16 ? 1e-5 : fused ? 1.0 / 256 : 1.0 / 128;
        const double atol = bf16 && !fused ? (x64 * w64).abs().max().item<double>() / 64 : 1e-5;
        EXPECT_TRUE(close(out.detach().to(torch::kDouble), want, rtol, atol));
        EXPECT_TRUE(close(rows.grad().to(torch::kDouble), want_rows_grad, rtol, 1e-5));
        // The weights' gradient, a sum of h products that may cancel: in fp32 (the kernels, and
        // torch in fp32) within h 2^-24 = 2^-18 of the sum of the products' sizes; torch's bf16
        // operations round each product (2^-9) and the result: 2^-7 of it (seen: 0.127 where
        // that is 1.2, on an H200).
        const double sizes = (dy_rows.abs() * x64.abs()).sum(1).max().item<double>();
        const double wtol = bf16 && !fused ? sizes / 128 : sizes / (1 << 18);
        EXPECT_TRUE(close(weights.grad().to(torch::kDouble), want_weights_grad, rtol, wtol));
      }
    }
  }
}

TEST(MoeCapacity, FormulaAndHandCheckedDropping) {
  EXPECT_EQ(expert_capacity(10, 2, 4, 1.0), 5);  // ceil(10*2/4 * 1.0)
  EXPECT_EQ(expert_capacity(7, 2, 4, 1.0), 4);   // ceil(3.5)
  EXPECT_EQ(expert_capacity(6, 1, 4, 1.5), 3);   // ceil(2.25)
  EXPECT_EQ(expert_capacity(0, 2, 4, 1.0), 0);

  // Five tokens, top-1: tokens 0..3 chose expert 0 with weights .6 .9 .7 .8, token 4 expert 1.
  auto example = [] {
    Routing r;
    r.probs = torch::tensor({0.6, 0.0, 0.9, 0.0, 0.7, 0.0, 0.8, 0.0, 0.0, 0.55}, torch::kDouble).reshape({5, 2});
    r.routing_map = r.probs > 0;
    return r;
  };
  auto kept = [](const Routing& r, int64_t expert) {
    std::vector<int64_t> tokens;
    for (int64_t t = 0; t < 5; ++t) {
      if (r.routing_map[t][expert].item<bool>()) tokens.push_back(t);
    }
    return tokens;
  };
  Routing by_probs = example();
  apply_capacity(by_probs, 2, DropPolicy::kProbs, false);
  EXPECT_EQ(kept(by_probs, 0), (std::vector<int64_t>{1, 3}));  // the two highest weights
  EXPECT_EQ(kept(by_probs, 1), (std::vector<int64_t>{4}));
  EXPECT_EQ(by_probs.probs[0][0].item<double>(), 0.0);        // dropped: weight 0
  EXPECT_EQ(by_probs.probs[1][0].item<double>(), 0.9);

  Routing by_position = example();
  apply_capacity(by_position, 2, DropPolicy::kPosition, false);
  EXPECT_EQ(kept(by_position, 0), (std::vector<int64_t>{0, 1}));  // the two earliest

  Routing padded = example();
  apply_capacity(padded, 2, DropPolicy::kProbs, true);
  ASSERT_EQ(padded.slots.sizes(), (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(padded.slots[0][0].item<int64_t>(), 1);
  EXPECT_EQ(padded.slots[0][1].item<int64_t>(), 3);
  EXPECT_EQ(padded.slots[1][0].item<int64_t>(), 4);
  EXPECT_TRUE(padded.slot_valid[0][1].item<bool>());
  EXPECT_FALSE(padded.slot_valid[1][1].item<bool>());  // expert 1 has one token: one padding slot

  // Capacity above the token count: the extra slots are padding.
  Routing wide = example();
  apply_capacity(wide, 7, DropPolicy::kProbs, true);
  EXPECT_EQ(wide.slots.size(1), 7);
  EXPECT_EQ(wide.slot_valid.sum().item<int64_t>(), 5);
}

TEST(MoeRouter, SelectionForEveryScoringMode) {
  const torch::Tensor logits = torch::tensor({1.0, 2.0, 3.0, 0.5}, torch::kDouble).reshape({1, 4});
  const double e1 = std::exp(1.0), e2 = std::exp(2.0), e3 = std::exp(3.0), e05 = std::exp(0.5);
  auto run = [&](MoEConfig moe, const torch::Tensor& bias = torch::Tensor()) {
    moe.num_experts = 4;
    moe.topk = 2;
    auto [w, e] = select_experts(logits, moe, bias);
    return std::make_pair(std::vector<double>{w[0][0].item<double>(), w[0][1].item<double>()},
                          std::vector<int64_t>{e[0][0].item<int64_t>(), e[0][1].item<int64_t>()});
  };
  MoEConfig pre;  // softmax over all, top-k, renormalize (Mixtral)
  auto [w, e] = run(pre);
  EXPECT_EQ(e, (std::vector<int64_t>{2, 1}));
  EXPECT_NEAR(w[0], e3 / (e3 + e2), 1e-12);
  EXPECT_NEAR(w[1], e2 / (e3 + e2), 1e-12);

  MoEConfig unnormalized = pre;  // Qwen2-MoE without norm_topk_prob
  unnormalized.normalize_topk = false;
  std::tie(w, e) = run(unnormalized);
  EXPECT_NEAR(w[0], e3 / (e1 + e2 + e3 + e05), 1e-12);

  MoEConfig post = pre;  // top-k on logits, softmax over the k
  post.router_pre_softmax = false;
  post.router_scaling_factor = 2.5;
  std::tie(w, e) = run(post);
  EXPECT_NEAR(w[0], 2.5 * e3 / (e3 + e2), 1e-12);

  MoEConfig sigmoid = pre;
  sigmoid.router_score = RouterScore::kSigmoid;
  auto sig = [](double x) { return 1.0 / (1.0 + std::exp(-x)); };
  std::tie(w, e) = run(sigmoid);
  EXPECT_EQ(e, (std::vector<int64_t>{2, 1}));
  EXPECT_NEAR(w[0], sig(3) / (sig(3) + sig(2)), 1e-12);
  // The bias changes the selection (expert 3 now first), never the weights.
  std::tie(w, e) = run(sigmoid, torch::tensor({0.0, 0.0, 0.0, 5.0}, torch::kFloat));
  EXPECT_EQ(e, (std::vector<int64_t>{3, 2}));
  EXPECT_NEAR(w[0], sig(0.5) / (sig(0.5) + sig(3)), 1e-12);

  MoEConfig grouped = pre;  // groups {0,1} and {2,3}: scores 3.7+... ; only the best group
  grouped.router_num_groups = 2;
  grouped.router_group_topk = 1;
  std::tie(w, e) = run(grouped);
  EXPECT_EQ(e, (std::vector<int64_t>{2, 3}));  // group {2,3} sums e3+e05 > e1+e2
  EXPECT_NEAR(w[1], e05 / (e3 + e05), 1e-12);
}

// Losses of one forward against loops over the definition (one rank, 6 tokens of 2 sequences).
TEST(MoeRouter, LossesAndBiasUpdateMatchHandComputations) {
  auto groups = single_process_groups();
  const int64_t n = 6, h = 4, experts = 4, k = 2;
  MoEConfig moe;
  moe.num_experts = experts;
  moe.topk = k;
  moe.aux_loss_coeff = 0.1;
  moe.z_loss_coeff = 0.01;
  moe.router_fp64 = true;
  const torch::Tensor x = data(11, {n, h}).to(torch::kDouble).to(device());
  const torch::Tensor sequence = torch::arange(n, torch::kLong).remainder(2).to(device());  // row r: sequence r % 2
  Router router(context(*groups, nullptr, false), "gate", h, moe, 0.5);
  router.train();
  const RouterLosses losses = router.forward(x.to(torch::kFloat), sequence, 2).losses;
  const torch::Tensor logits = torch::matmul(x, router.weight.detach().to(torch::kDouble).t()).cpu();  // [n, E]
  const torch::Tensor p = torch::softmax(logits, -1);
  const torch::Tensor chosen = std::get<1>(p.topk(k, -1));
  // Switch loss: E * coeff / (k T^2) * sum_e P_e f_e.
  std::vector<double> f(experts, 0), f_seq(2 * experts, 0);
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t j = 0; j < k; ++j) {
      const int64_t e = chosen[t][j].item<int64_t>();
      f[e] += 1;
      f_seq[(t % 2) * experts + e] += 1;
    }
  }
  double aux = 0, z = 0;
  for (int64_t e = 0; e < experts; ++e) aux += p.select(1, e).sum().item<double>() * f[e];
  aux *= experts * moe.aux_loss_coeff / (k * n * n);
  for (int64_t t = 0; t < n; ++t) z += std::pow(torch::logsumexp(logits[t], 0).item<double>(), 2);
  z *= moe.z_loss_coeff / n;
  EXPECT_NEAR(losses.load_balancing.item<double>(), aux, 1e-12);
  EXPECT_NEAR(losses.z_loss.item<double>(), z, 1e-12);

  // Per sequence (3 tokens each): mean over sequences of E/(k S^2) sum_e P_be f_be.
  moe.load_balancing = LoadBalancing::kSeqAuxLoss;
  Router seq_router(context(*groups, nullptr, false), "gate", h, moe, 0.5);
  seq_router.train();
  const RouterLosses seq_losses = seq_router.forward(x.to(torch::kFloat), sequence, 2).losses;
  double seq_aux = 0;
  for (int64_t b = 0; b < 2; ++b) {
    for (int64_t e = 0; e < experts; ++e) {
      double p_sum = 0;
      for (int64_t t = b; t < n; t += 2) p_sum += p[t][e].item<double>();
      seq_aux += p_sum * f_seq[b * experts + e] * experts / (k * 9.0);
    }
  }
  EXPECT_NEAR(seq_losses.load_balancing.item<double>(), moe.aux_loss_coeff * seq_aux / 2, 1e-12);
}

TEST(MoeRouter, PaddingIsNeitherRoutedNorCounted) {
  // Tokens 2 and 5 are padding: they get no copies and no weight, and every loss equals that of
  // the four real tokens routed alone (the same sequences).
  auto groups = single_process_groups();
  const int64_t n = 6, h = 4;
  MoEConfig moe;
  moe.num_experts = 4;
  moe.topk = 2;
  moe.aux_loss_coeff = 0.1;
  moe.z_loss_coeff = 0.01;
  moe.router_fp64 = true;
  const torch::Tensor x = data(21, {n, h}).to(device());
  const torch::Tensor sequence = torch::arange(n, torch::kLong).remainder(2).to(device());
  const torch::Tensor mask = torch::tensor({1, 1, 0, 1, 1, 0}, torch::kBool).to(device());
  const torch::Tensor real = torch::tensor({0, 1, 3, 4}, torch::kLong).to(device());
  for (const LoadBalancing balancing : {LoadBalancing::kAuxLoss, LoadBalancing::kSeqAuxLoss}) {
    SCOPED_TRACE(enum_name(balancing));
    moe.load_balancing = balancing;
    Router router(context(*groups, nullptr, false), "gate", h, moe, 0.5);
    router.train();
    const Routing padded = router.forward(x, sequence, 2, mask);
    const Routing alone = router.forward(x.index_select(0, real), sequence.index_select(0, real), 2);
    EXPECT_EQ(padded.copies_per_token, 0);
    EXPECT_EQ(padded.routing_map.select(0, 2).sum().item<int64_t>(), 0);
    EXPECT_EQ(padded.routing_map.select(0, 5).sum().item<int64_t>(), 0);
    EXPECT_EQ(padded.probs.select(0, 5).abs().sum().item<double>(), 0.0);
    EXPECT_TRUE(torch::equal(padded.routing_map.index_select(0, real), alone.routing_map));
    EXPECT_NEAR(padded.losses.load_balancing.item<double>(), alone.losses.load_balancing.item<double>(), 1e-12);
    EXPECT_NEAR(padded.losses.z_loss.item<double>(), alone.losses.z_loss.item<double>(), 1e-12);
  }
}

TEST(MoeRouter, ExpertBiasUpdateUsesCountsOverAllRanks) {
  // World groups (tp 1: dp = world); rank r routes one token to expert r % 4 (top-1).
  ProcessGroups groups(Topology(ParallelLayout{world_size()}), comm_options());
  MoEConfig moe;
  moe.num_experts = 4;
  moe.topk = 1;
  moe.expert_bias = true;
  moe.expert_bias_update_rate = 0.01;
  moe.aux_loss_coeff = 0;
  Router router(context(groups, nullptr, false), "gate", 4, moe, 0.02);
  {
    torch::NoGradGuard no_grad;
    router.weight.copy_(torch::eye(4) * 10);
  }
  router.train();
  const torch::Tensor x = torch::zeros({1, 4}).index_fill_(1, torch::tensor({world_rank() % 4}), 1.0).to(device());
  router.forward(x, torch::zeros({1}, torch::kLong).to(device()), 1);
  router.update_expert_bias();
  std::vector<double> counts(4, 0);
  for (int r = 0; r < world_size(); ++r) counts[r % 4] += 1;
  const double mean = world_size() / 4.0;
  for (int64_t e = 0; e < 4; ++e) {
    const double expected = 0.01 * (mean > counts[e] ? 1 : mean < counts[e] ? -1 : 0);
    EXPECT_NEAR(router.expert_bias[e].item<double>(), expected, 1e-7) << "expert " << e;
  }
}

struct LayerCase {
  int64_t tp, ep, etp;
  Dispatcher dispatcher;
  double capacity_factor;
  bool pad;
  bool grouped = true;
};

// Within 1e-5 of the reference, relative to the reference's largest entry (sums over ranks run
// in another order: single entries that nearly cancel differ by fp32 rounding only).
::testing::AssertionResult near(const torch::Tensor& a, const torch::Tensor& b) {
  return close(a, b, 1e-5, 1e-5 * std::max(b.numel() ? b.abs().max().item<double>() : 0.0, 1e-3));
}

// Rank r's tokens: some ranks have none.
int64_t tokens_of(int64_t rank) { return rank % 3 == 1 ? 0 : 5 + rank; }

MoEConfig layer_moe(const LayerCase& c) {
  MoEConfig moe;
  moe.num_experts = 8;
  moe.topk = 2;
  moe.expert_ffn_hidden_size = 8;
  moe.aux_loss_coeff = 0;
  moe.router_fp64 = true;
  moe.expert_bias = true;  // used to keep experts 5..7 empty
  moe.capacity_factor = c.capacity_factor;
  moe.pad_to_capacity = c.pad;
  moe.dispatcher = c.dispatcher;
  moe.grouped_experts = c.grouped;
  return moe;
}

ModelConfig layer_model() {
  ModelConfig model;
  model.hidden_size = 16;
  model.ffn_hidden_size = 8;
  model.init_std = 0.3;
  return model;
}

void starve_experts(MoELayer& layer) {
  torch::NoGradGuard no_grad;
  layer.gate->expert_bias.narrow(0, 5, 3).fill_(-1e4);
}

// Full (single-process) gradient of every parameter of the reference layer, by name.
std::map<std::string, torch::Tensor> grads_by_name(torch::nn::Module& module) {
  std::map<std::string, torch::Tensor> out;
  for (const auto& item : module.named_parameters()) {
    const torch::Tensor grad = item.value().grad();
    out[item.key()] = grad.defined() ? grad.cpu() : torch::zeros_like(item.value()).cpu();
  }
  return out;
}

void check_layer(const LayerCase& c) {
  const int world = world_size();
  const ModelConfig model = layer_model();
  const MoEConfig moe = layer_moe(c);
  // Reference: one process, every rank's tokens in turn, loss sum(out * weight_r).
  auto self = single_process_groups();
  MoELayer reference(context(*self, nullptr, false), "mlp", model, moe);
  starve_experts(reference);
  torch::Tensor my_ref_out, my_ref_grad;
  for (int r = 0; r < world; ++r) {
    const torch::Tensor x = data(100 + r, {tokens_of(r), 1, 16}).to(device()).requires_grad_(true);
    ForwardState state;
    const torch::Tensor out = reference.forward(x, torch::Tensor(), state);
    (out * data(200 + r, out.sizes()).to(device())).sum().backward();
    if (r == world_rank()) {
      my_ref_out = out.detach();
      my_ref_grad = x.grad();
    }
  }
  const auto ref_grads = grads_by_name(reference);

  ProcessGroups groups(Topology(ParallelLayout{world, c.tp, 1, 1, c.ep, c.etp}), comm_options());
  ParamRegistry registry;
  MoELayer layer(context(groups, &registry, true), "mlp", model, moe);
  starve_experts(layer);
  ParamBuffers buffers(layer.parameters(), registry, groups);
  const torch::Tensor x = data(100 + world_rank(), {tokens_of(world_rank()), 1, 16}).to(device()).requires_grad_(true);
  ForwardState state;
  const torch::Tensor out = layer.forward(x, torch::Tensor(), state);
  (out * data(200 + world_rank(), out.sizes()).to(device())).sum().backward();
  EXPECT_TRUE(near(out, my_ref_out)) << "output";
  EXPECT_TRUE(near(x.grad(), my_ref_grad)) << "input gradient";

  buffers.finish_grad_sync();
  for (const auto& item : layer.named_parameters()) {
    const ParamInfo info = registry.info(item.value());
    torch::Tensor expected;
    if (info.expert && c.grouped) {  // experts.{gate_up_proj,down_proj}: [E/ep, ...] of the stack
      expected = shard_of(ref_grads.at(item.key()).narrow(0, info.expert_begin, item.value().size(0)), info);
    } else if (info.expert) {  // experts.<local e>.<weight> is expert expert_begin of the reference
      const std::string weight = item.key().substr(item.key().rfind('.') + 1);
      expected = shard_of(ref_grads.at(fmt::format("experts.{}.{}", info.expert_begin, weight)), info);
    } else {
      expected = ref_grads.at(item.key());
    }
    EXPECT_TRUE(near(item.value().grad(), expected)) << item.key();
  }
}

TEST(MoeLayer, FoldedLayoutsAndBothDispatchersMatchSingleProcess) {
  const int world = world_size();
  std::vector<LayerCase> cases;
  for (const auto& [tp, ep, etp] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{
           {1, 1, 1}, {1, 2, 1}, {2, 1, 2}, {2, 2, 1}, {1, 8, 1}, {2, 4, 1}, {2, 2, 2}, {4, 2, 1}, {2, 4, 2}, {1, 4, 2}}) {
    if (world % tp != 0 || world % (ep * etp) != 0) continue;
    for (Dispatcher d : {Dispatcher::kAllToAll, Dispatcher::kAllGather}) {
      cases.push_back({tp, ep, etp, d, 0.0, false});  // dropless
      cases.push_back({tp, ep, etp, d, 1.0, true});   // dropping, padded to capacity
      cases.push_back({tp, ep, etp, d, 0.75, false});  // dropping, not padded
    }
  }
  cases.push_back({1, world >= 2 ? 2 : 1, 1, Dispatcher::kAllToAll, 0.0, false, false});  // sequential experts
  for (const LayerCase& c : cases) {
    SCOPED_TRACE(fmt::format("world {} tp {} ep {} etp {} {} capacity {} pad {} {}", world, c.tp, c.ep, c.etp,
                             c.dispatcher == Dispatcher::kAllGather ? "allgather" : "alltoall", c.capacity_factor,
                             c.pad, c.grouped ? "grouped" : "sequential"));
    check_layer(c);
  }
}

}  // namespace
}  // namespace foldtron::testing
