// Dense transformer equivalence: for every tensor/sequence/data-parallel layout of the job's
// world size, the tiny dense model's loss and every gradient (gathered over tp by each
// parameter's split) equal those of the single-process model on the whole global batch, which
// every rank also builds (tp of one rank) from the same seed. Also: RMSNorm (fused on CUDA) and
// rotary against fp32, attention against its formula, and layout-independent initialization.
#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>

#include "config/config_load.h"
#include "core/torch_compat.h"
#include "layers/attention.h"
#include "layers/context.h"
#include "layers/context_parallel.h"
#include "layers/embedding.h"
#include "layers/norm.h"
#include "layers/recompute.h"
#include "config/layout.h"
#include "models/registry.h"
#include "mpi_test.h"
#include "optim/param_buffer.h"
#include "parallel/process_groups.h"
#include "parallel/rng.h"

namespace foldtron::testing {
namespace {

constexpr int64_t kBatch = 4;  // sequences in the global batch
constexpr int64_t kSeq = 16;

ModelConfig tiny_model() { return load_config({"tiny-dense", "", {"model.num_layers=2"}}).model; }

std::unique_ptr<Communicator> self_communicator() {
  MPI_Comm comm;
  MPI_Comm_dup(MPI_COMM_SELF, &comm);
  return std::make_unique<Communicator>("self", comm, std::vector<int64_t>{world_rank()}, comm_options());
}

// A global batch of token ids [kSeq + 1, kBatch], the same on every rank.
torch::Tensor global_tokens() {
  at::Generator generator = at::detail::createCPUGenerator(99);
  return torch::randint(0, 256, {kSeq + 1, kBatch}, generator, torch::kLong);
}

// Loss and gradients of `model` on sequences [first, first+count) of the global batch; the loss
// is the sum of token losses divided by the global token count.
double run_step(Model& model, int64_t first, int64_t count) {
  const torch::Tensor tokens = global_tokens().narrow(1, first, count).to(device());
  ModelInputs inputs;
  inputs.input_ids = tokens.narrow(0, 0, kSeq);                 // [s, b]
  inputs.positions = torch::arange(kSeq, torch::TensorOptions().dtype(torch::kLong).device(device()));
  const torch::Tensor targets = tokens.narrow(0, 1, kSeq);      // [s, b]
  ForwardState state;
  const torch::Tensor logits = model.logits(inputs, state);     // [s, b, Vp/tp]
  torch::Tensor loss = vocab_parallel_cross_entropy(logits, targets, *model.context().tp, model.vocab_size()).sum() /
                       static_cast<double>(kSeq * kBatch);
  loss.backward();
  return loss.item<double>();
}

void check_layouts(bool tied, int64_t vocab);

TEST(DenseEquivalence, TensorSequenceAndDataParallelMatchSingleProcess) {
  // A vocabulary of 259 does not split over tp 2 or 4: it is padded, and the padding must not
  // change the loss or any gradient.
  for (bool tied : {false, true}) {
    for (int64_t vocab : {256, 259}) {
      SCOPED_TRACE(fmt::format("{} embeddings, vocabulary {}", tied ? "tied" : "untied", vocab));
      check_layouts(tied, vocab);
    }
  }
}

void check_layouts(bool tied, int64_t vocab) {
  const int world = world_size();
  Config config = load_config({"tiny-dense", "", {"model.num_layers=2"}});
  config.model.tie_embeddings = tied;
  config.model.vocab_size = vocab;
  // Reference: one rank's model on the whole batch.
  ProcessGroups self(Topology(ParallelLayout{1, 1, 1, 1, 1, 1, "tp-cp-ep-dp-pp"}), comm_options(), MPI_COMM_SELF);
  const std::shared_ptr<Model> reference = build_model(config, self, device());
  const double reference_loss = run_step(*reference, 0, kBatch);
  std::map<std::string, torch::Tensor> reference_grads;
  for (const auto& item : reference->named_parameters()) reference_grads[item.key()] = item.value().grad().cpu();

  int64_t layouts = 0;
  for (int64_t tp : {1, 2, 4}) {
    if (world % tp != 0 || kBatch % (world / tp) != 0) continue;
    for (bool sp : {false, true}) {
      if (sp && tp == 1) continue;
      SCOPED_TRACE(fmt::format("world {} tp {} dp {} sequence_parallel {}", world, tp, world / tp, sp));
      ++layouts;
      Config layout = config;
      layout.parallel.tp = tp;
      layout.parallel.sequence_parallel = sp;
      ProcessGroups groups(Topology(layout_of(layout.parallel, world)), comm_options());
      const std::shared_ptr<Model> model = build_model(layout, groups, device());
      const int64_t dp = groups.dp().size();
      const int64_t per_rank = kBatch / dp;
      BufferOptions options;
      options.bucket_bytes = 4096;  // many small buckets
      ParamBuffers buffers(model->parameters(), model->registry(), groups, options);
      torch::Tensor loss = torch::full({1}, run_step(*model, groups.coords().dp * per_rank, per_rank), torch::kDouble);
      // Every parameter got its gradient, so every bucket started while backward ran.
      EXPECT_GT(buffers.num_buckets(), 10);
      EXPECT_EQ(buffers.buckets_started_in_backward(), buffers.num_buckets());
      buffers.finish_grad_sync();
      groups.dp().all_reduce(loss);
      EXPECT_NEAR(loss.item<double>(), reference_loss, 1e-5 * std::abs(reference_loss));
      for (const auto& item : model->named_parameters()) {
        const torch::Tensor grad = gather_full(item.value().grad(), model->registry().info(item.value()), groups);
        EXPECT_TRUE(close(grad, reference_grads.at(item.key()), 1e-5, 1e-6)) << item.key();
      }
    }
  }
  if (layouts == 0) GTEST_SKIP() << "no tensor/data-parallel layout of " << kBatch << " sequences fits " << world << " ranks";
}

TEST(Recompute, CheckpointGivesTheSameGradientsAndReplaysDropout) {
  const RankCoords coords{};
  const torch::Tensor x0 = data(1, {6, 5}).to(device()), w0 = data(2, {5, 4}).to(device());
  struct Run {
    torch::Tensor out, x_grad, w_grad, next_draw;
  };
  // f(x) = dropout(tanh(x w)) with the model-parallel stream; the loss weighs each output.
  const auto run = [&](bool recompute) {
    RngTracker rng(7, coords, device());
    const torch::Tensor x = x0.clone().requires_grad_(true), w = w0.clone().requires_grad_(true);
    const CheckpointFn f = [&](const std::vector<torch::Tensor>& in) -> std::vector<torch::Tensor> {
      return {rng.dropout(torch::tanh(torch::matmul(in[0], w)), 0.5, RngStream::kModelParallel)};
    };
    const torch::Tensor out = (recompute ? checkpoint(f, {x}, &rng) : f({x}))[0];
    (out * data(3, {6, 4}).to(device())).sum().backward();
    // After backward the stream continues where the forward left it.
    const torch::Tensor next = torch::rand({3}, rng.generator(RngStream::kModelParallel),
                                           c10::nullopt, torch::TensorOptions().device(device()));
    return Run{out.detach(), x.grad(), w.grad(), next};
  };
  const Run plain = run(false), recomputed = run(true);
  EXPECT_TRUE(close(recomputed.out, plain.out, 0, 0));
  EXPECT_TRUE(close(recomputed.x_grad, plain.x_grad, 1e-6, 1e-7)) << "input gradient";
  EXPECT_TRUE(close(recomputed.w_grad, plain.w_grad, 1e-6, 1e-7)) << "parameter gradient (inner backward)";
  EXPECT_TRUE(close(recomputed.next_draw, plain.next_draw, 0, 0)) << "the RNG stream after backward";
  EXPECT_GT((plain.out == 0).sum().item<int64_t>(), 0) << "dropout dropped nothing: the test would not see masks";
}

TEST(Recompute, AttachedLossGetsItsScaledGradient) {
  const torch::Tensor w = torch::tensor({2.0}, torch::kDouble).requires_grad_(true);
  const torch::Tensor x = torch::tensor({3.0, 4.0}, torch::kDouble).requires_grad_(true);
  const torch::Tensor loss = (w * w).sum();                       // d loss / dw = 2w = 4
  const torch::Tensor y = attach_loss_gradient(x * 5.0, loss, 0.25);  // y = 5x, loss weighted 0.25
  y.sum().backward();
  EXPECT_DOUBLE_EQ(w.grad().item<double>(), 0.25 * 4.0);
  EXPECT_TRUE(close(x.grad(), torch::full({2}, 5.0, torch::kDouble), 0, 0));
}

TEST(ContextParallel, AllGatherUlyssesAndRingMatchFullAttentionForwardAndBackward) {
  // The whole world is the cp group; every rank builds the full q, k, v and the full result (in
  // double, from the values the ranks see). fp32 with head size 4 (explicit math), and bf16 with
  // head size 16, which with --device=cuda runs the fused kernels through both autograd paths.
  // All-gather also with attention dropout's path (a masked `core`, here without dropout).
  const int cp = world_size();
  const int64_t b = 2, hq = 8, hkv = 4;
  const double scale = 0.5;
  for (const auto& [type_of_case, size] : {std::pair{torch::kFloat, int64_t{4}}, std::pair{torch::kBFloat16, int64_t{16}}}) {
    const torch::ScalarType type = type_of_case;  // (lambdas cannot capture structured bindings in C++17)
    const int64_t d = size, s = 8 * cp;
    const auto full = [&](int64_t seed, int64_t heads) {
      return data(seed, {b, heads, s, d}).to(type).to(torch::kDouble).requires_grad_(true);
    };
    const torch::Tensor q = full(11, hq), k = full(12, hkv), v = full(13, hkv);
    const torch::Tensor weights = data(14, {b, hq, s, d}, torch::kDouble);
    const torch::Tensor expected = core_attention_reference(q, k, v, scale);
    (expected * weights).sum().backward();
    const torch::Tensor mine = cp_positions(s, cp, world_rank());
    EXPECT_EQ(mine.size(0), s / cp);
    const CoreAttentionFn core = [&](const torch::Tensor& cq, const torch::Tensor& ck, const torch::Tensor& cv,
                                     const torch::Tensor& mask) {  // fp32 arithmetic, as the model's SDPA
      const auto wide = [](const torch::Tensor& t) { return t.to(torch::kFloat); };
      return core_attention_reference(wide(cq), wide(ck), wide(cv), scale, mask).to(cq.scalar_type());
    };
    const double tol = type == torch::kFloat ? 1e-5 : 1.6e-2;  // bf16: the outputs and gradients are rounded
    for (const auto& [comm, dropout] : {std::pair{CpCommType::kAllGather, false}, std::pair{CpCommType::kAllGather, true},
                                        std::pair{CpCommType::kAllToAll, false}, std::pair{CpCommType::kP2P, false}}) {
      if (comm == CpCommType::kAllToAll && hkv % cp != 0) continue;  // Ulysses splits the KV heads over cp
      SCOPED_TRACE(fmt::format("{} {}{}", enum_name(comm), c10::toString(type), dropout ? " (dropout's path)" : ""));
      const auto local = [&](const torch::Tensor& t) {
        return t.detach().index_select(2, mine).to(device(), type).requires_grad_(true);
      };
      const torch::Tensor lq = local(q), lk = local(k), lv = local(v);
      const torch::Tensor out = context_parallel_attention(lq, lk, lv, world(), comm, scale, core, dropout);
      EXPECT_EQ(out.scalar_type(), type);
      (out.to(torch::kDouble) * weights.index_select(2, mine).to(device())).sum().backward();
      const auto mine_of = [&](const torch::Tensor& t) { return t.index_select(2, mine); };
      EXPECT_TRUE(close(out.to(torch::kDouble), mine_of(expected.detach()), tol, tol)) << "output";
      EXPECT_TRUE(close(lq.grad().to(torch::kDouble), mine_of(q.grad()), tol, tol)) << "query gradient";
      EXPECT_TRUE(close(lk.grad().to(torch::kDouble), mine_of(k.grad()), tol, tol)) << "key gradient";
      EXPECT_TRUE(close(lv.grad().to(torch::kDouble), mine_of(v.grad()), tol, tol)) << "value gradient";
    }
  }
}

TEST(ContextParallel, PiecewiseAttentionMatchesMaskedAttentionInEveryKernel) {
  // Rank 1 of cp 3 (query chunks 1 and 4 of 6): the pieces allgather_pieces gives it over the
  // whole sequence's keys in natural order, and those of ring_piece for each rank's block laid end
  // to end in rank order; against masked attention in double on the same values, the mask built
  // from the tokens' positions (a key at or before the query), fp32 and bf16, through every
  // kernel that runs there: explicit math everywhere; with --device=cuda in bf16 also cuDNN's and
  // flash attention's (checked to run, and cuDNN's to be the default). No communication.
  const int64_t b = 2, hq = 4, hkv = 2, d = 16, c = 8, cp = 3, rank = 1, local = 2 * c, s = 2 * cp * c;
  const double scale = 0.25;
  struct Case {
    const char* name;
    torch::Tensor key_positions;  // [sk]
    std::vector<AttentionPiece> pieces;
  };
  std::vector<AttentionPiece> ring;
  for (int64_t src = 0; src < cp; ++src) {
    AttentionPiece piece = ring_piece(rank, src, local);
    piece.k_begin += src * local;
    ring.push_back(piece);
  }
  const std::vector<Case> cases = {{"allgather", torch::arange(s), allgather_pieces(rank, cp, local)},
                                   {"ring", cp_gathered_positions(s, cp), ring}};
  const torch::Tensor query_positions = cp_positions(s, cp, rank);
  int fused_runs = 0;
  for (const torch::ScalarType type : {torch::kFloat, torch::kBFloat16}) {
    for (const Case& one : cases) {
      const torch::Tensor mask = one.key_positions.unsqueeze(0) <= query_positions.unsqueeze(1);  // [sq, sk]
      const int64_t sq = local, sk = one.key_positions.size(0);
      // The values both sides see: rounded to `type` first.
      const auto input = [&](int64_t seed, int64_t heads, int64_t rows) { return data(seed, {b, heads, rows, d}).to(type); };
      const torch::Tensor q0 = input(21, hq, sq), k0 = input(22, hkv, sk), v0 = input(23, hkv, sk);
      const torch::Tensor weights = data(24, {b, hq, sq, d}, torch::kDouble);
      const auto leaf = [](const torch::Tensor& t) { return t.clone().requires_grad_(true); };
      const torch::Tensor qd = leaf(q0.to(torch::kDouble)), kd = leaf(k0.to(torch::kDouble)),
                          vd = leaf(v0.to(torch::kDouble));
      const torch::Tensor expected = core_attention_reference(qd, kd, vd, scale, mask);
      (expected * weights).sum().backward();
      if (device().is_cuda() && type == torch::kBFloat16 && torch_compat::has_cudnn_attention()) {
        EXPECT_EQ(piece_kernel(q0.to(device())), PieceKernel::kCudnn);
      }
      for (const PieceKernel kernel : {PieceKernel::kMath, PieceKernel::kFlash, PieceKernel::kCudnn}) {
        const torch::Tensor q = leaf(q0.to(device())), k = leaf(k0.to(device())), v = leaf(v0.to(device()));
        if (!piece_kernel_runs(kernel, q)) continue;
        SCOPED_TRACE(fmt::format("{} {} kernel {}", one.name, c10::toString(type), static_cast<int>(kernel)));
        fused_runs += kernel != PieceKernel::kMath;
        const torch::Tensor out = piecewise_attention(q, k, v, one.pieces, scale, kernel);
        (out.to(torch::kDouble) * weights.to(device())).sum().backward();
        // bf16: the outputs and each piece's gradients are rounded to bf16 (2^-9 relative).
        const double tol = type == torch::kFloat ? 1e-5 : 1.6e-2;
        EXPECT_EQ(out.scalar_type(), type);
        EXPECT_TRUE(close(out.to(torch::kDouble), expected.detach(), tol, tol)) << "output";
        EXPECT_TRUE(close(q.grad().to(torch::kDouble), qd.grad(), tol, tol)) << "query gradient";
        EXPECT_TRUE(close(k.grad().to(torch::kDouble), kd.grad(), tol, tol)) << "key gradient";
        EXPECT_TRUE(close(v.grad().to(torch::kDouble), vd.grad(), tol, tol)) << "value gradient";
      }
    }
  }
  if (device().is_cuda() && torch_compat::has_flash_attention() && torch_compat::has_cudnn_attention()) {
    EXPECT_EQ(fused_runs, 4) << "flash and cuDNN, each over both cases in bf16";
  }
}

TEST(VocabParallelCrossEntropy, MatchesTorchWithIgnoredTargets) {
  // Logits [s, b, V] split over the whole world as tp; some targets ignored.
  const int n = world_size();
  const int64_t vocab = 8 * n;
  const torch::Tensor full = data(500, {5, 3, vocab}).to(torch::kDouble);
  torch::Tensor targets = torch::randint(0, vocab, {5, 3}, at::detail::createCPUGenerator(501), torch::kLong);
  targets[1][2] = kIgnoreIndex;
  targets[4][0] = kIgnoreIndex;
  const torch::Tensor upstream = data(502, {5, 3}).to(torch::kDouble);
  // Reference: torch's cross-entropy per token.
  torch::Tensor reference_logits = full.clone().requires_grad_(true);
  torch::Tensor reference = torch::nn::functional::cross_entropy(
      reference_logits.reshape({-1, vocab}), targets.reshape({-1}),
      torch::nn::functional::CrossEntropyFuncOptions().ignore_index(kIgnoreIndex).reduction(torch::kNone));
  (reference * upstream.reshape({-1})).sum().backward();
  // Parallel: this rank's vocabulary shard.
  torch::Tensor shard = full.chunk(n, -1)[world_rank()].to(torch::kFloat).to(device()).requires_grad_(true);
  torch::Tensor losses = vocab_parallel_cross_entropy(shard, targets.to(device()), world());
  EXPECT_TRUE(close(losses, reference.reshape({5, 3}), 1e-5, 1e-6));
  EXPECT_EQ(losses[1][2].item<double>(), 0.0);
  (losses * upstream.to(torch::kFloat).to(device())).sum().backward();
  EXPECT_TRUE(close(shard.grad(), reference_logits.grad().chunk(n, -1)[world_rank()], 1e-5, 1e-6));
}

TEST(VocabParallelCrossEntropy, OnePassKernelsMatchDoubleInBf16AndFp32WithPadding) {
  // Shards of `local` columns over the world as tp, the last `padding` of the vocabulary padding.
  // With --device=cuda the fused kernels run where the rows are whole 16-byte packs (local 1000
  // and 40 in bf16, 1000 in fp32; 40 - 5 valid columns end mid-pack); 37 bf16 columns (74-byte
  // rows) take torch's operations there too. Beyond one rank, a last shard of padding only (40 of
  // 40 columns) adds nothing. Against a double computation on the same values.
  struct Case {
    torch::ScalarType type;
    int64_t local, padding;
  };
  const int n = world_size();
  for (const Case& c : {Case{torch::kBFloat16, 1000, 3}, Case{torch::kFloat, 1000, 0}, Case{torch::kBFloat16, 40, 5},
                        Case{torch::kBFloat16, 37, 0}, Case{torch::kBFloat16, 40, 40}}) {
    SCOPED_TRACE(::testing::Message() << c.type << ", " << c.local << " columns a rank, padding " << c.padding);
    if (c.padding >= c.local * n) continue;  // one rank: no vocabulary left
    const int64_t vocab = n * c.local - c.padding;
    const torch::Tensor full = (4.0 * data(510, {7, 5, n * c.local})).to(c.type);  // the values both sides see
    torch::Tensor targets = torch::randint(0, vocab, {7, 5}, at::detail::createCPUGenerator(511), torch::kLong);
    targets[2][3] = kIgnoreIndex;
    const torch::Tensor upstream = data(512, {7, 5});
    // Reference: torch's cross-entropy in double over the vocabulary's columns.
    torch::Tensor reference_logits = full.narrow(-1, 0, vocab).to(torch::kDouble).requires_grad_(true);
    const torch::Tensor reference = torch::nn::functional::cross_entropy(
        reference_logits.reshape({-1, vocab}), targets.reshape({-1}),
        torch::nn::functional::CrossEntropyFuncOptions().ignore_index(kIgnoreIndex).reduction(torch::kNone));
    (reference * upstream.to(torch::kDouble).reshape({-1})).sum().backward();
    const torch::Tensor reference_grad =
        torch::cat({reference_logits.grad(), torch::zeros({7, 5, c.padding}, torch::kDouble)}, -1);  // padding: 0
    // This rank's shard.
    torch::Tensor shard = full.chunk(n, -1)[world_rank()].to(device()).contiguous().requires_grad_(true);
    const torch::Tensor losses = vocab_parallel_cross_entropy(shard, targets.to(device()), world(), vocab);
    const bool fused = device().is_cuda() && c.local * shard.element_size() % 16 == 0;
    EXPECT_EQ(losses.grad_fn()->name().find("CrossEntropy<true>") != std::string::npos, fused)
        << losses.grad_fn()->name();
    EXPECT_TRUE(close(losses, reference.reshape({7, 5}), 1e-5, 1e-5));
    EXPECT_EQ(losses[2][3].item<double>(), 0.0);
    (losses * upstream.to(device())).sum().backward();
    // One rounding to the logits' type: 2^-8 relative in bf16.
    const double rtol = c.type == torch::kBFloat16 ? 1.0 / 256 : 1e-5;
    EXPECT_TRUE(close(shard.grad().to(torch::kDouble), reference_grad.chunk(n, -1)[world_rank()], rtol, 1e-7));
  }
}

TEST(Attention, RotaryMatchesAnFp32ComputationForwardAndBackward) {
  // bf16 on the test device: with --device=cuda the fused kernels (d 8: four elements per thread;
  // d 6: one), else torch's operations; against fp32 on the same bf16 inputs and tables.
  for (const int64_t d : {8, 6, 128}) {
    SCOPED_TRACE(::testing::Message() << "head dim " << d);
    torch::manual_seed(d);
    const int64_t s = 7, b = 2, heads = 3;
    const torch::Tensor positions = torch::arange(3, 3 + s, torch::kLong).to(device());
    const auto [cos, sin] = rotary_tables(positions, d, 10000.0, torch::kBFloat16);
    const torch::Tensor x = torch::randn({s, b, heads, d}).to(torch::kBFloat16).to(device()).requires_grad_(true);
    const torch::Tensor dy = torch::randn({s, b, heads, d}).to(torch::kBFloat16).to(device());
    const torch::Tensor y = apply_rotary(x, cos, sin);
    y.backward(dy);
    const torch::Tensor x32 = x.detach().cpu().to(torch::kFloat).requires_grad_(true);
    const torch::Tensor reference = apply_rotary(x32, cos.cpu().to(torch::kFloat), sin.cpu().to(torch::kFloat));
    reference.backward(dy.cpu().to(torch::kFloat));
    // One rounding in the fused kernels (2^-7 relative); torch's bf16 operations round after each
    // product and the sum, which may cancel: 2^-5 relative plus 1e-3 of the largest value.
    const double rtol = device().is_cuda() ? 1.0 / 128 : 1.0 / 32;
    const auto close = [rtol](const torch::Tensor& got, const torch::Tensor& want) {
      const torch::Tensor error = (got.cpu().to(torch::kFloat) - want).abs();
      return (error <= want.abs() * rtol + 1e-3 * want.abs().max()).all().item<bool>();
    };
    EXPECT_TRUE(close(y.detach(), reference.detach()));
    EXPECT_TRUE(close(x.grad(), x32.grad()));
  }
}

TEST(Norm, RmsNormMatchesAnFp32ComputationForwardAndBackward) {
  // bf16 on the test device: with --device=cuda the fused kernels (h 64: one pack of 8 per thread
  // of a warp; h 24: three packs, masked lanes; h 4800: two packs per thread; h 12296: four, and
  // 702 rows, more than the backward kernel's blocks, so blocks walk several rows; h 12: torch's
  // operations), else torch's operations; against fp32 on the same bf16 input and weight.
  auto self = self_communicator();
  const std::vector<std::pair<int64_t, int64_t>> cases{{15, 64}, {15, 24}, {15, 4800}, {15, 12}, {702, 12296}};
  for (const auto& [rows, h] : cases) {
    SCOPED_TRACE(::testing::Message() << rows << " rows, hidden " << h);
    torch::manual_seed(h);
    const LayerContext ctx{self.get(), false, 7, device(), torch::kBFloat16, nullptr, nullptr};
    Norm norm(ctx, Normalization::kRmsNorm, h, 1e-5);
    {
      torch::NoGradGuard no_grad;
      norm.weight.copy_(1.0 + 0.5 * torch::randn({h}));
    }
    const torch::Tensor x =
        (3.0 * torch::randn({3, rows / 3, h})).to(torch::kBFloat16).to(device()).requires_grad_(true);
    const torch::Tensor dy = torch::randn({3, rows / 3, h}).to(torch::kBFloat16).to(device());
    const torch::Tensor y = norm.forward(x);
    y.backward(dy);
    const bool fused = device().is_cuda() && h % 8 == 0;
    EXPECT_EQ(y.grad_fn()->name().find("FusedRmsNorm") != std::string::npos, fused) << y.grad_fn()->name();

    const LayerContext cpu32{self.get(), false, 7, torch::kCPU, torch::kFloat, nullptr, nullptr};
    Norm reference(cpu32, Normalization::kRmsNorm, h, 1e-5);
    {
      torch::NoGradGuard no_grad;
      reference.weight.copy_(norm.weight.detach().cpu().to(torch::kFloat));
    }
    const torch::Tensor x32 = x.detach().cpu().to(torch::kFloat).requires_grad_(true);
    const torch::Tensor y32 = reference.forward(x32);
    y32.backward(dy.cpu().to(torch::kFloat));
    // Fused: one rounding of each output (2^-7 relative; y rounds the normalized value first, as
    // the fp32 path's reference does not, hence 2^-6). Torch's bf16 operations round the product
    // with the weight and its gradient before the reductions: 2^-5 plus 1e-3 of the largest value.
    const double rtol = fused ? 1.0 / 64 : 1.0 / 32;
    const auto close = [rtol](const torch::Tensor& got, const torch::Tensor& want) {
      const torch::Tensor error = (got.cpu().to(torch::kFloat) - want).abs();
      return (error <= want.abs() * rtol + 1e-3 * want.abs().max()).all().item<bool>();
    };
    EXPECT_TRUE(close(y.detach(), y32.detach()));
    EXPECT_TRUE(close(x.grad(), x32.grad()));
    // The weight gradient sums 15 products, each rounded (bf16 xhat, or torch's bf16 product):
    // errors up to 2^-8 of each term, which may not cancel where the sum does; 2^-6 of the sum of
    // their magnitudes, plus the output's rounding.
    const torch::Tensor xs = x32.detach();
    const torch::Tensor terms = (dy.cpu().to(torch::kFloat) * xs * torch::rsqrt(xs.pow(2).mean(-1, true) + 1e-5)).abs();
    const torch::Tensor dw_error = (norm.weight.grad().cpu().to(torch::kFloat) - reference.weight.grad()).abs();
    const torch::Tensor dw_bound = reference.weight.grad().abs() * rtol + terms.reshape({-1, h}).sum(0) / 64;
    EXPECT_TRUE((dw_error <= dw_bound).all().item<bool>());
  }
}

TEST(Init, FullNormalDependsOnNameSeedAndShapeOnlyNotOnThreads) {
  // Three blocks of 2^20 values, filled in parallel: the same with one thread or two, blocks
  // unlike one another, N(0, std^2) overall; a small tensor is one torch::randn of its seed.
  auto self = self_communicator();
  const LayerContext ctx{self.get(), false, 7, torch::kCPU, torch::kFloat, nullptr, nullptr};
  const int threads = at::get_num_threads();
  at::set_num_threads(1);
  const torch::Tensor one = full_normal(ctx, "w", {3, 1 << 20}, 0.5);
  EXPECT_EQ(ctx.init_times->threads, 1);
  at::set_num_threads(2);
  const torch::Tensor two = full_normal(ctx, "w", {3, 1 << 20}, 0.5);
  EXPECT_EQ(full_normal(ctx, "empty", {0, 4}, 1.0).sizes(), (std::vector<int64_t>{0, 4}));
  at::set_num_threads(threads);
  EXPECT_TRUE(torch::equal(one, two));
  // The startup line's figures: every draw on this context (and its copies), the most threads.
  EXPECT_EQ(ctx.init_times->values, 2 * (3 << 20));
  EXPECT_EQ(ctx.init_times->threads, 2);
  EXPECT_FALSE(torch::equal(one[0], one[1]));
  EXPECT_FALSE(torch::equal(one[1], one[2]));
  EXPECT_NEAR(one.std().item<double>(), 0.5, 1e-3);
  EXPECT_NEAR(one.mean().item<double>(), 0.0, 1e-3);
  EXPECT_FALSE(torch::equal(full_normal(ctx, "v", {3, 1 << 20}, 0.5), one));
  const LayerContext other_seed{self.get(), false, 8, torch::kCPU, torch::kFloat, nullptr, nullptr};
  EXPECT_FALSE(torch::equal(full_normal(other_seed, "w", {3, 1 << 20}, 0.5), one));
  EXPECT_EQ(other_seed.init_times->values, 3 << 20);  // a context of its own counts on its own
  EXPECT_TRUE(torch::equal(full_normal(ctx, "w", {2, 3}, 1.0).view({-1}), full_normal(ctx, "w", {6}, 1.0)));
}

TEST(Attention, MatchesTheDirectFormula) {
  // One rank's attention (tp 1) with GQA, rotary and QKV bias against a loop over heads and
  // positions written from the definitions.
  auto self = self_communicator();
  ModelConfig m = tiny_model();
  AttentionOptions options;
  options.hidden = m.hidden_size;
  options.heads = m.num_attention_heads;
  options.groups = m.num_query_groups;
  options.head_dim = m.kv_channels();
  options.qkv_bias = true;
  options.rope_theta = 500.0;
  const LayerContext ctx{self.get(), false, 7, torch::kCPU, torch::kFloat, nullptr, nullptr};
  Attention attention(ctx, "attn", options);
  torch::NoGradGuard no_grad;
  attention.q_proj->bias.copy_(data(600, {m.num_attention_heads * m.kv_channels()}) * 0.1);
  attention.k_proj->bias.copy_(data(601, {m.num_query_groups * m.kv_channels()}) * 0.1);
  const int64_t s = 6, d = m.kv_channels(), heads = m.num_attention_heads, groups = m.num_query_groups;
  const torch::Tensor x = data(602, {s, 1, m.hidden_size});
  AttentionInputs in;
  in.positions = torch::arange(s, torch::kLong);
  const torch::Tensor out = attention.forward(x, in);  // [s, 1, h]

  const torch::Tensor xs = x.select(1, 0).to(torch::kDouble);  // [s, h]
  auto project = [&](const ColumnParallelLinear& p) {
    return torch::matmul(xs, p.weight.to(torch::kDouble).t()) + p.bias.to(torch::kDouble);
  };
  const torch::Tensor q = project(*attention.q_proj), k = project(*attention.k_proj), v = project(*attention.v_proj);
  auto rope = [&](torch::Tensor vec, int64_t pos) {  // rotate-half convention, pairs (i, i + d/2)
    torch::Tensor out_vec = vec.clone();
    for (int64_t i = 0; i < d / 2; ++i) {
      const double angle = static_cast<double>(pos) / std::pow(500.0, 2.0 * static_cast<double>(i) / d);
      const double a = vec[i].item<double>(), b = vec[i + d / 2].item<double>();
      out_vec[i] = a * std::cos(angle) - b * std::sin(angle);
      out_vec[i + d / 2] = b * std::cos(angle) + a * std::sin(angle);
    }
    return out_vec;
  };
  torch::Tensor context = torch::zeros({s, heads * d}, torch::kDouble);
  for (int64_t head = 0; head < heads; ++head) {
    const int64_t group = head / (heads / groups);
    for (int64_t i = 0; i < s; ++i) {
      const torch::Tensor qi = rope(q[i].narrow(0, head * d, d), i);
      std::vector<double> scores;
      for (int64_t j = 0; j <= i; ++j) {  // causal
        scores.push_back(torch::dot(qi, rope(k[j].narrow(0, group * d, d), j)).item<double>() / std::sqrt(d));
      }
      const double max = *std::max_element(scores.begin(), scores.end());
      double total = 0;
      for (double& sc : scores) total += (sc = std::exp(sc - max));
      for (int64_t j = 0; j <= i; ++j) {
        context[i].narrow(0, head * d, d) += scores[static_cast<size_t>(j)] / total * v[j].narrow(0, group * d, d);
      }
    }
  }
  const torch::Tensor expected = torch::matmul(context, attention.o_proj->weight.to(torch::kDouble).t());
  EXPECT_TRUE(close(out.select(1, 0), expected, 1e-5, 1e-5));
}

}  // namespace
}  // namespace foldtron::testing
