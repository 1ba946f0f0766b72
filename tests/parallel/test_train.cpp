// Training equivalence over several optimizer steps: the per-step losses, gradient norms and
// every gathered gradient of every tensor/sequence/context/data/pipeline-parallel layout of the
// job (and of gradient accumulation against a larger micro-batch) equal those of the
// single-process run (a one-rank job over MPI_COMM_SELF on every rank). Also: clipping norm and
// AdamW against hand computations.
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>

#include <fmt/ranges.h>

#include "config/config_load.h"
#include "core/errors.h"
#include "core/fault.h"
#include "mpi_test.h"
#include "optim/adamw.h"
#include "parallel/process_groups.h"
#include "train_test.h"

namespace foldtron::testing {
namespace {

Config tiny_config(std::vector<std::string> overrides) {
  std::vector<std::string> all{"model.num_layers=2", "train.train_iters=5", "train.global_batch_size=8",
                               "train.seq_length=32", "train.lr=0.01", "train.lr_warmup_iters=1",
                               "logging.log_interval=100"};
  all.insert(all.end(), overrides.begin(), overrides.end());
  return load_config({"tiny-dense", "", all});
}

TEST(TrainEquivalence, LayoutsAndAccumulationMatchSingleProcessOverFiveSteps) {
  const int world = world_size();
  // Gradients are compared element by element at every step: kSmoothAdam keeps the updates of
  // near-zero gradients from amplifying rounding (see train_test.h).
  const auto config_of = [](std::vector<std::string> overrides) {
    overrides.insert(overrides.end(), kSmoothAdam.begin(), kSmoothAdam.end());
    return tiny_config(overrides);
  };
  const Recorded recorded = train_recorded(config_of({"train.micro_batch_size=1"}), MPI_COMM_SELF, 1);
  const std::vector<StepRecord>& reference = recorded.result.steps;
  ASSERT_EQ(reference.size(), 5u);
  double worst_grad = 0;
  int checked = 0;
  EXPECT_LT(reference.back().loss, reference.front().loss) << "the loss should fall";
  struct Case {
    int64_t tp;
    bool sp;
    int64_t micro;
    std::vector<std::string> extra = {};  // more overrides
    int64_t cp = 1;
  };
  const std::string distributed = "parallel.distributed_optimizer=true", a2a = "parallel.cp_comm_type=a2a",
                    ring = "parallel.cp_comm_type=p2p";
  for (const Case& c : {Case{1, false, 1}, Case{1, false, 2}, Case{2, false, 1}, Case{2, true, 1}, Case{4, false, 1},
                        Case{4, true, 2}, Case{1, false, 1, {distributed}}, Case{2, true, 2, {distributed}},
                        Case{1, false, 2, {"parallel.overlap_grad_reduce=false"}},
                        Case{2, true, 1, {"parallel.grad_bucket_mb=0.001"}},
                        // Context parallelism: all-gather and Ulysses attention.
                        Case{1, false, 1, {}, 2}, Case{2, true, 1, {a2a}, 2}, Case{1, false, 2, {a2a, distributed}, 2},
                        Case{1, false, 1, {ring}, 2}, Case{2, true, 2, {ring, "model.recompute=core_attn"}, 2}}) {
    if (world % (c.tp * c.cp) != 0 || 8 % (c.micro * (world / (c.tp * c.cp))) != 0) continue;
    SCOPED_TRACE(fmt::format("world {} tp {} cp {} sp {} micro-batch {} {}", world, c.tp, c.cp, c.sp, c.micro,
                             fmt::join(c.extra, " ")));
    std::vector<std::string> overrides{fmt::format("parallel.tp={}", c.tp), fmt::format("parallel.cp={}", c.cp),
                                       fmt::format("parallel.sequence_parallel={}", c.sp ? "true" : "false"),
                                       fmt::format("train.micro_batch_size={}", c.micro)};
    overrides.insert(overrides.end(), c.extra.begin(), c.extra.end());
    const Config config = config_of(overrides);
    const Recorded run = train_recorded(config, MPI_COMM_WORLD, world);
    const std::vector<StepRecord>& steps = run.result.steps;
    ASSERT_EQ(steps.size(), reference.size());
    for (size_t i = 0; i < steps.size(); ++i) {
      EXPECT_NEAR(steps[i].loss, reference[i].loss, 1e-5 * reference[i].loss) << "step " << i + 1;
      EXPECT_NEAR(steps[i].grad_norm, reference[i].grad_norm, 1e-5 * reference[i].grad_norm) << "step " << i + 1;
    }
    worst_grad = std::max(worst_grad, expect_same_gradients(run, recorded));
    ++checked;
  }
  if (checked == 0) GTEST_SKIP() << "no layout of the cases fits " << world << " ranks";
  if (world_rank() == 0) {
    std::cout << fmt::format("{} layouts; worst relative difference of a gradient over five steps: {:.3g}\n", checked,
                             worst_grad);
  }
}

TEST(TrainEquivalence, Bf16MomentsFollowFp32MomentsAndShardAlike) {
  // AdamW moments stored in bf16: the run stays close to fp32 moments, and the per-element
  // update gives the same run sharded over every rank (distributed optimizer) as in one process.
  const std::vector<StepRecord> fp32 = run_training(tiny_config({}), MPI_COMM_SELF, 1);
  const std::vector<StepRecord> bf16 = run_training(tiny_config({"train.adam_moments_dtype=bf16"}), MPI_COMM_SELF, 1);
  ASSERT_EQ(bf16.size(), fp32.size());
  for (size_t i = 0; i < fp32.size(); ++i) {
    EXPECT_NEAR(bf16[i].loss, fp32[i].loss, 1e-2 * fp32[i].loss) << "step " << i + 1;
  }
  EXPECT_NE(bf16.back().loss, fp32.back().loss) << "rounded moments change the updates a little";
  EXPECT_LT(bf16.back().loss, bf16.front().loss);
  const int world = world_size();
  if (world == 1) return;
  const std::vector<StepRecord> sharded = run_training(
      tiny_config({"train.adam_moments_dtype=bf16", "parallel.distributed_optimizer=true"}), MPI_COMM_WORLD, world);
  ASSERT_EQ(sharded.size(), bf16.size());
  for (size_t i = 0; i < bf16.size(); ++i) {
    EXPECT_NEAR(sharded[i].loss, bf16[i].loss, 1e-5 * bf16[i].loss) << "step " << i + 1;
    EXPECT_NEAR(sharded[i].grad_norm, bf16[i].grad_norm, 1e-5 * bf16[i].grad_norm) << "step " << i + 1;
  }
}

TEST(TrainEquivalence, PipelineSchedulesMatchSingleProcessOverFiveSteps) {
  // Four layers: pp 2 and 4 (1F1B), pp 2 x vpp 2 (interleaved), with the other dimensions, tied
  // embeddings (a copy on the last stage), the distributed optimizer and recomputation. Losses,
  // gradient norms and every final parameter against the single-process run (kSmoothAdam).
  const int world = world_size();
  struct Case {
    int64_t pp, vpp, tp, cp, micro;
    std::vector<std::string> extra = {};
  };
  const std::string tied = "model.tie_embeddings=true", distributed = "parallel.distributed_optimizer=true";
  std::map<bool, Recorded> recorded;  // by tie_embeddings
  double worst_step = 0, worst_param = 0, worst_grad = 0;
  int checked = 0;
  for (const Case& c : {Case{2, 1, 1, 1, 1}, Case{2, 2, 1, 1, 1}, Case{2, 1, 1, 1, 2, {tied}}, Case{4, 1, 1, 1, 1},
                        Case{2, 1, 2, 1, 1, {"parallel.sequence_parallel=true"}},
                        Case{2, 2, 1, 1, 1, {tied, distributed}}, Case{2, 1, 1, 2, 1, {"model.recompute=full"}},
                        Case{2, 2, 2, 1, 2, {tied, "parallel.sequence_parallel=true"}},
                        Case{2, 1, 1, 1, 4, {"parallel.pipeline_layers=[3,1]"}}}) {
    const int64_t model_parallel = c.pp * c.tp * c.cp;
    if (world % model_parallel != 0 || 8 % (c.micro * (world / model_parallel)) != 0) continue;
    const int64_t micro_batches = 8 / (c.micro * (world / model_parallel));
    if (c.vpp > 1 && micro_batches % c.pp != 0) continue;
    const bool tie = std::find(c.extra.begin(), c.extra.end(), tied) != c.extra.end();
    SCOPED_TRACE(fmt::format("world {} pp {} vpp {} tp {} cp {} micro-batch {} {}", world, c.pp, c.vpp, c.tp, c.cp,
                             c.micro, fmt::join(c.extra, " ")));
    std::vector<std::string> common{"model.num_layers=4", fmt::format("model.tie_embeddings={}", tie)};
    common.insert(common.end(), kSmoothAdam.begin(), kSmoothAdam.end());
    if (!recorded.count(tie)) recorded[tie] = train_recorded(tiny_config(common), MPI_COMM_SELF, 1, true);
    const TrainResult& reference = recorded[tie].result;
    std::vector<std::string> overrides = common;
    for (const std::string& o : {fmt::format("parallel.pp={}", c.pp), fmt::format("parallel.vpp={}", c.vpp),
                                 fmt::format("parallel.tp={}", c.tp), fmt::format("parallel.cp={}", c.cp),
                                 fmt::format("train.micro_batch_size={}", c.micro)}) {
      overrides.push_back(o);
    }
    overrides.insert(overrides.end(), c.extra.begin(), c.extra.end());
    const Recorded run = train_recorded(tiny_config(overrides), MPI_COMM_WORLD, world, true);
    const TrainResult& result = run.result;
    worst_grad = std::max(worst_grad, expect_same_gradients(run, recorded[tie]));
    ASSERT_EQ(result.steps.size(), reference.steps.size());
    for (size_t i = 0; i < result.steps.size(); ++i) {
      const StepRecord &got = result.steps[i], &want = reference.steps[i];
      EXPECT_NEAR(got.loss, want.loss, 1e-5 * want.loss) << "step " << i + 1;
      EXPECT_NEAR(got.grad_norm, want.grad_norm, 1e-5 * want.grad_norm) << "step " << i + 1;
      worst_step = std::max({worst_step, std::abs(got.loss - want.loss) / want.loss,
                             std::abs(got.grad_norm - want.grad_norm) / want.grad_norm});
    }
    std::map<std::string, int64_t> covered;
    const double difference = final_param_difference(result, reference, &covered);
    EXPECT_LT(difference, 1e-5) << "final parameters";
    worst_param = std::max(worst_param, difference);
    EXPECT_EQ(uncovered_params(reference, covered), std::vector<std::string>{});
    ++checked;
  }
  if (checked == 0) GTEST_SKIP() << "no pipeline layout of the cases fits " << world << " ranks";
  if (world_rank() == 0) {
    std::cout << fmt::format("{} pipeline layouts; worst relative difference: losses/norms {:.3g}, gradients {:.3g}, "
                             "final parameters {:.3g}\n",
                             checked, worst_step, worst_grad, worst_param);
  }
}

TEST(TrainEquivalence, RecomputationChangesNothingButMemory) {
  // With dropout on (masks replayed from the restored streams) and the layout of the whole job.
  const int world = world_size();
  const int64_t tp = world % 2 == 0 ? 2 : 1;
  const std::vector<std::string> base{fmt::format("parallel.tp={}", tp), "parallel.sequence_parallel=true",
                                      "model.hidden_dropout=0.1", "model.attention_dropout=0.1",
                                      "train.micro_batch_size=2"};
  const auto with = [&](std::vector<std::string> extra) {
    extra.insert(extra.begin(), base.begin(), base.end());
    return run_training(tiny_config(extra), MPI_COMM_WORLD, world);
  };
  const std::vector<StepRecord> plain = with({});
  for (const std::vector<std::string>& mode : std::vector<std::vector<std::string>>{
           {"model.recompute=full"}, {"model.recompute=full", "model.recompute_num_layers=2"},
           {"model.recompute=core_attn"}}) {
    SCOPED_TRACE(fmt::format("{}", fmt::join(mode, " ")));
    const std::vector<StepRecord> steps = with(mode);
    ASSERT_EQ(steps.size(), plain.size());
    for (size_t i = 0; i < steps.size(); ++i) {
      EXPECT_NEAR(steps[i].loss, plain[i].loss, 1e-6 * plain[i].loss) << "step " << i + 1;
      EXPECT_NEAR(steps[i].grad_norm, plain[i].grad_norm, 1e-6 * plain[i].grad_norm) << "step " << i + 1;
    }
  }
}

TEST(Optim, GlobalGradNormCountsReplicatedParametersOnce) {
  if (world_size() % 2 != 0) GTEST_SKIP() << "needs tp 2";
  const Topology topology(ParallelLayout{world_size(), 2, 1, 1, 1, 1, "tp-cp-ep-dp-pp"});
  ProcessGroups groups(topology, comm_options());
  for (const bool shard : {false, true}) {
    SCOPED_TRACE(shard ? "sharded over dp" : "whole gradients");
    ParamRegistry registry;
    // A tp-split parameter whose shard on tp rank r is filled with (r + 1), and a replicated one.
    torch::Tensor split = torch::zeros({3}).requires_grad_(true);
    torch::Tensor replicated = torch::zeros({2}).requires_grad_(true);
    registry.add(split, ParamInfo{0, false});
    registry.add(replicated, ParamInfo{-1, false});
    BufferOptions options;
    options.shard = shard;
    ParamBuffers buffers({split, replicated}, registry, groups, options);
    buffers.main_grad(split).fill_(static_cast<double>(groups.coords().tp + 1));
    buffers.main_grad(replicated).fill_(2.0);
    // Hand count: shards 3*1^2 + 3*2^2 = 15, replicated once 2*2^2 = 8.
    EXPECT_NEAR(global_grad_norm(buffers, registry, groups), std::sqrt(23.0), 1e-12);
  }
}

TEST(Optim, GlobalGradNormReadsBf16MainGradientsInFullPrecision) {
  // bf16 main gradients (train.main_grads_dtype): the norm's sums are fp32 or wider, not rounded
  // to bf16 on the way. With --device=cuda this checks the fused multi-tensor norm, which rounds
  // to its inputs' dtype unless asked for fp32; on the CPU the fp64 per-tensor norm.
  ProcessGroups groups(Topology(ParallelLayout{1, 1, 1, 1, 1, 1, "tp-cp-ep-dp-pp"}), comm_options(), MPI_COMM_SELF);
  ParamRegistry registry;
  torch::Tensor w = torch::zeros({3, 700}, torch::kBFloat16).to(device()).requires_grad_(true);
  torch::Tensor v = torch::zeros({5}, torch::kBFloat16).to(device()).requires_grad_(true);
  torch::Tensor b = torch::zeros({7}, torch::kFloat).to(device()).requires_grad_(true);
  BufferOptions options;
  options.grad_dtype = torch::kBFloat16;
  ParamBuffers buffers({w, v, b}, registry, groups, options);
  buffers.main_grad(w).fill_(0.5);
  buffers.main_grad(v).fill_(-3.0);
  buffers.main_grad(b).fill_(1.25);
  // 2100 * 0.25 + 5 * 9 + 7 * 1.5625 = 580.9375; its square root is not a bf16 number.
  EXPECT_NEAR(global_grad_norm(buffers, registry, groups), std::sqrt(580.9375), 1e-5);
}

double round_to_bf16(double x) { return torch::tensor(x, torch::kDouble).to(torch::kBFloat16).item<double>(); }

TEST(Optim, AdamWMatchesAHandComputation) {
  // Every rank a dp rank: sharded, rank 0 owns these few elements and the others gather them.
  ProcessGroups groups(Topology(ParallelLayout{world_size(), 1, 1, 1, 1, 1, "tp-cp-ep-dp-pp"}), comm_options());
  for (const DType moments : {DType::kFloat32, DType::kBfloat16}) {
    for (const bool shard : {false, true}) {
      SCOPED_TRACE(fmt::format("{} moments, {}", enum_name(moments), shard ? "distributed optimizer" : "plain"));
      TrainConfig t;
      t.adam_beta1 = 0.9;
      t.adam_beta2 = 0.95;
      t.adam_eps = 1e-8;
      t.weight_decay = 0.1;
      t.adam_moments_dtype = moments;
      // On the test device: with --device=cuda this checks the fused kernel (clipping included).
      torch::Tensor w = torch::tensor({{1.0, -2.0}}, torch::kFloat).to(device()).requires_grad_(true);  // 2-D: decayed
      torch::Tensor b = torch::tensor({0.5}, torch::kFloat).to(device()).requires_grad_(true);          // 1-D: not
      ParamRegistry registry;
      BufferOptions options;
      options.shard = shard;
      ParamBuffers buffers({w, b}, registry, groups, options);
      AdamW adam(buffers, t);
      const double lr = 0.01;
      // Moments as stored: rounded to bf16 after each step (the step itself uses them unrounded).
      const auto store = [&](double x) { return moments == DType::kBfloat16 ? round_to_bf16(x) : x; };
      double m = 0, v = 0, value = 1.0, bias_value = 0.5, mb = 0, vb = 0;
      for (int step = 1; step <= 3; ++step) {
        const double g = 0.3 * step, gb = -0.2 * step;
        buffers.main_grad(w).fill_(g);
        buffers.main_grad(b).fill_(gb);
        adam.step(lr, /*grad_scale=*/0.5);
        EXPECT_EQ(buffers.main_grad(w)[0][0].item<double>(), static_cast<double>(static_cast<float>(g)))
            << "clipping scales gradients as they are read, not in the buffer";
        const double gs = 0.5 * g, gbs = 0.5 * gb;
        const double bias1 = 1 - std::pow(0.9, step), bias2 = 1 - std::pow(0.95, step);
        m = 0.9 * m + 0.1 * gs;
        v = 0.95 * v + 0.05 * gs * gs;
        value = value * (1 - lr * 0.1) - lr * (m / bias1) / (std::sqrt(v / bias2) + 1e-8);
        m = store(m);
        v = store(v);
        mb = 0.9 * mb + 0.1 * gbs;
        vb = 0.95 * vb + 0.05 * gbs * gbs;
        bias_value -= lr * (mb / bias1) / (std::sqrt(vb / bias2) + 1e-8);
        mb = store(mb);
        vb = store(vb);
      }
      EXPECT_NEAR(w[0][0].item<double>(), value, 1e-6);
      EXPECT_NEAR(b[0].item<double>(), bias_value, 1e-6);
      // fp32 main weights and two moments (4 or 2 bytes each) for this rank's shard: the buffer
      // (padded) split dp ways.
      const int64_t padded = buffers.grad_bytes() / 4;
      const int64_t bytes_per_element = moments == DType::kBfloat16 ? 8 : 12;
      EXPECT_EQ(adam.state_bytes(), bytes_per_element * (shard ? padded / world_size() : padded));
    }
  }
}

TEST(Optim, FusedCudaStepMatchesTheReferenceStep) {
  // The CUDA kernel (one pass, vector loads) against the same update in torch operations on the
  // CPU: fp32 and bf16 parameters in one model, odd sizes (element-wise tails; the buffers align
  // every parameter to 64 elements, so whole unaligned segments do not occur), decayed and not,
  // clipping, both moment dtypes.
  if (!device().is_cuda()) GTEST_SKIP() << "the fused kernel runs with --device=cuda";
  ProcessGroups groups(Topology(ParallelLayout{1, 1, 1, 1, 1, 1, "tp-cp-ep-dp-pp"}), comm_options(), MPI_COMM_SELF);
  const std::vector<std::pair<std::vector<int64_t>, torch::ScalarType>> shapes{
      {{37, 129}, torch::kFloat}, {{1000}, torch::kFloat}, {{3, 5}, torch::kBFloat16},
      {{64, 4096}, torch::kBFloat16}, {{4099}, torch::kBFloat16}, {{7, 1031}, torch::kFloat}};
  for (const auto& [moments, grads] : {std::pair{DType::kFloat32, torch::kFloat}, std::pair{DType::kBfloat16, torch::kFloat},
                                       std::pair{DType::kFloat32, torch::kBFloat16}}) {
    SCOPED_TRACE(fmt::format("{} moments, {} main gradients of bf16 parameters", enum_name(moments),
                             c10::toString(grads)));
    TrainConfig t;
    t.adam_moments_dtype = moments;
    BufferOptions options;
    options.grad_dtype = grads;
    torch::manual_seed(7);
    std::vector<torch::Tensor> inits, cpu, cuda;
    for (const auto& [shape, dtype] : shapes) {
      const torch::Tensor init = torch::randn(shape).to(dtype);
      inits.push_back(init);
      cpu.push_back(init.clone().requires_grad_(true));
      cuda.push_back(init.to(device()).requires_grad_(true));
    }
    ParamRegistry cpu_registry, cuda_registry;
    ParamBuffers cpu_buffers(cpu, cpu_registry, groups, options), cuda_buffers(cuda, cuda_registry, groups, options);
    AdamW cpu_adam(cpu_buffers, t), cuda_adam(cuda_buffers, t);
    for (int step = 1; step <= 3; ++step) {
      for (size_t i = 0; i < cpu.size(); ++i) {
        const torch::Tensor grad = torch::randn(cpu[i].sizes()) * 0.1;  // rounded alike on both sides
        ASSERT_EQ(cuda_buffers.main_grad(cuda[i]).scalar_type(),
                  cuda[i].scalar_type() == torch::kFloat ? torch::kFloat : grads);
        cpu_buffers.main_grad(cpu[i]).copy_(grad);
        cuda_buffers.main_grad(cuda[i]).copy_(grad);
      }
      cpu_adam.step(1e-2, 0.7);
      cuda_adam.step(1e-2, 0.7);
    }
    for (size_t i = 0; i < cpu.size(); ++i) {
      SCOPED_TRACE(fmt::format("parameter {} of shape {}", i, cpu[i].sizes()));
      const torch::Tensor got = cuda[i].detach().cpu().to(torch::kDouble);
      const torch::Tensor want = cpu[i].detach().to(torch::kDouble);
      // fp32: last-bit differences of contracted multiply-adds (1e-5 relative), and with bf16
      // moments a moment that rounds the other way moves a weight by up to lr * 2^-7 a step (3
      // steps); bf16 parameters: one unit in the last place more. A wrong update is off by ~lr.
      const double moment_flips = moments == DType::kBfloat16 ? 3 * 1e-2 / 128 : 0.0;
      const double relative = cpu[i].scalar_type() == torch::kFloat ? 1e-5 : 1.0 / 128;
      EXPECT_TRUE(((got - want).abs() <= want.abs() * relative + moment_flips + 1e-7).all().item<bool>())
          << "worst difference " << (got - want).abs().max().item<double>();
      if (cpu[i].scalar_type() == torch::kFloat) {  // every element written (each moves by about lr)
        EXPECT_TRUE((got != inits[i].to(torch::kDouble)).all().item<bool>());
      }
    }
  }
}

TEST(Optim, Bf16GradientsAccumulateInFp32MainGradients) {
  ProcessGroups groups(Topology(ParallelLayout{1, 1, 1, 1, 1, 1, "tp-cp-ep-dp-pp"}), comm_options(), MPI_COMM_SELF);
  torch::Tensor w = torch::zeros({1, 1}, torch::kBFloat16).requires_grad_(true);
  ParamRegistry registry;
  ParamBuffers buffers({w}, registry, groups);
  // 256 + 1 is not representable in bf16 (8-bit mantissa): accumulated there it would stay 256.
  buffers.set_sync(false);
  for (double g : {256.0, 1.0}) {
    (w * torch::full({1, 1}, g, torch::kBFloat16)).sum().backward();
    EXPECT_FALSE(w.grad().defined()) << "the bf16 gradient is freed once it is in the main gradient";
  }
  buffers.finish_grad_sync();
  EXPECT_EQ(buffers.main_grad(w).scalar_type(), torch::kFloat);
  EXPECT_EQ(buffers.main_grad(w).item<double>(), 257.0);
}

TEST(Optim, Bf16MainGradientsAccumulateInBf16AndFp32ParametersKeepFp32) {
  // train.main_grads_dtype=bf16 (Megatron's --main-grads-dtype): a bf16 parameter's gradients add
  // up in a bf16 buffer, half the bytes, and are reduced in bf16; an fp32 parameter beside it keeps
  // its fp32 gradient. Layers writing the gradient themselves are handed the bf16 buffer.
  ProcessGroups groups(Topology(ParallelLayout{world_size(), 1, 1, 1, 1, 1, "tp-cp-ep-dp-pp"}), comm_options());
  torch::Tensor w = torch::zeros({1, 1}, torch::kBFloat16).requires_grad_(true);
  torch::Tensor b = torch::zeros({1}, torch::kFloat).requires_grad_(true);
  ParamRegistry registry;
  BufferOptions options;
  options.grad_dtype = torch::kBFloat16;
  ParamBuffers buffers({w, b}, registry, groups, options);
  EXPECT_EQ(buffers.main_grad(w).scalar_type(), torch::kBFloat16);
  EXPECT_EQ(buffers.main_grad(b).scalar_type(), torch::kFloat);
  ASSERT_EQ(registry.main_grad_writer(), &buffers);
  EXPECT_EQ(registry.main_grad_writer()->main_grad_dtype(), torch::kBFloat16);
  // Two buffers of 64 elements (one parameter each, padded to 64 x the group): 2 + 4 bytes each.
  EXPECT_EQ(buffers.grad_bytes(), 64 * world_size() * (2 + 4));
  buffers.set_sync(false);
  (w * torch::full({1, 1}, 256.0, torch::kBFloat16)).sum().backward();
  buffers.set_sync(true);
  (w * torch::full({1, 1}, 1.0, torch::kBFloat16) + b * 0.5).sum().backward();
  buffers.finish_grad_sync();
  // 256 + 1 rounds to 256 in bf16 (8-bit mantissa), on every rank; the bf16 sum over ranks,
  // 256 * world, is exact in bf16 for up to 256 ranks.
  const double ranks = world_size();
  EXPECT_EQ(buffers.main_grad(w).item<double>(), 256.0 * ranks) << "accumulated in bf16";
  EXPECT_EQ(buffers.main_grad(b).item<double>(), 0.5 * ranks);
  BufferOptions fp16;
  fp16.grad_dtype = torch::kHalf;
  EXPECT_THROW(ParamBuffers({w}, registry, groups, fp16), InternalError) << "fp32 or bf16 main gradients only";
}

// A layer that computes its weight's gradient itself (gradient-accumulation fusion): the
// gradient of w * x by w is x, handed to the registry's MainGradWriter in fp32; autograd gets a
// placeholder. `accumulated` records what the writer asked for each time.
class FusedScale : public torch::autograd::Function<FusedScale> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& w, const torch::Tensor& x,
                               int64_t registry) {
    ctx->save_for_backward({x, w});
    ctx->saved_data["registry"] = registry;
    return w * x;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto* registry = reinterpret_cast<const ParamRegistry*>(static_cast<intptr_t>(ctx->saved_data["registry"].toInt()));
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor grad = grads[0].to(torch::kFloat) * saved[0].to(torch::kFloat);
    const bool taken = registry->main_grad_writer()->write_main_grad(saved[1], [&](const torch::Tensor& main, bool add) {
      accumulated.push_back(add);
      if (add) {
        main.add_(grad);
      } else {
        main.copy_(grad);
      }
    });
    EXPECT_TRUE(taken);
    return {torch::empty_like(grads[0]), torch::Tensor(), torch::Tensor()};
  }
  static inline std::vector<bool> accumulated;
};

TEST(Optim, LayersMayWriteBf16GradientsIntoTheMainGradientThemselves) {
  ProcessGroups groups(Topology(ParallelLayout{1, 1, 1, 1, 1, 1, "tp-cp-ep-dp-pp"}), comm_options(), MPI_COMM_SELF);
  torch::Tensor w = torch::zeros({1, 1}, torch::kBFloat16).requires_grad_(true);
  ParamRegistry registry;
  {
    BufferOptions off;
    off.fuse_wgrad = false;
    ParamBuffers buffers({w}, registry, groups, off);
    EXPECT_EQ(registry.main_grad_writer(), nullptr) << "no writer with fusion off";
  }
  ParamBuffers buffers({w}, registry, groups);
  ASSERT_EQ(registry.main_grad_writer(), &buffers);
  torch::Tensor fp32 = torch::zeros({1}, torch::kFloat).requires_grad_(true);
  EXPECT_FALSE(buffers.write_main_grad(fp32, [](const torch::Tensor&, bool) {})) << "not a parameter of the buffers";
  buffers.main_grad(w).fill_(std::nan(""));  // stale: the step's first gradient overwrites it
  const auto handle = static_cast<int64_t>(reinterpret_cast<intptr_t>(&registry));
  FusedScale::accumulated.clear();
  for (const double x : {256.0, 1.0}) {  // 257 is not a bf16 number: accumulated in fp32
    buffers.set_sync(x == 1.0);
    FusedScale::apply(w, torch::full({1, 1}, x, torch::kBFloat16), handle).sum().backward();
    EXPECT_FALSE(w.grad().defined()) << "the placeholder is dropped";
  }
  EXPECT_EQ(FusedScale::accumulated, (std::vector<bool>{false, true})) << "overwrite first, then add";
  EXPECT_EQ(buffers.buckets_started_in_backward(), 1) << "the bucket still starts when its gradient is in";
  EXPECT_THROW(buffers.write_main_grad(w, [](const torch::Tensor&, bool) {}), InternalError)
      << "layers must not write a gradient whose bucket is being reduced";
  buffers.finish_grad_sync();
  EXPECT_EQ(buffers.main_grad(w).item<double>(), 257.0);
  buffers.zero_grads();
  FusedScale::accumulated.clear();
  FusedScale::apply(w, torch::full({1, 1}, 3.0, torch::kBFloat16), handle).sum().backward();
  EXPECT_EQ(FusedScale::accumulated, (std::vector<bool>{false})) << "a new step overwrites again";
}


TEST(TrainEquivalence, Bf16TrainingFollowsFp32) {
  // bf16 parameters with fp32 main weights and gradients stay close to the fp32 run.
  const std::vector<StepRecord> fp32 = run_training(tiny_config({}), MPI_COMM_SELF, 1);
  const std::vector<StepRecord> bf16 = run_training(tiny_config({"model.params_dtype=bf16"}), MPI_COMM_SELF, 1);
  ASSERT_EQ(bf16.size(), fp32.size());
  for (size_t i = 0; i < fp32.size(); ++i) {
    EXPECT_NEAR(bf16[i].loss, fp32[i].loss, 2e-2 * fp32[i].loss) << "step " << i + 1;
    EXPECT_FALSE(bf16[i].skipped);
  }
  EXPECT_LT(bf16.back().loss, bf16.front().loss);
}

TEST(TrainEquivalence, Bf16MainGradientsFollowFp32OnesAndShardAlike) {
  // bf16 parameters whose main gradients add up (over 8 micro-batches) and are reduced in bf16:
  // the run stays close to fp32 main gradients but is not the same; sharded over every rank
  // (distributed optimizer, dp = world: the reduce-scatter sums in bf16 in another order) it stays
  // as close to the one-process bf16 run.
  const std::vector<std::string> bf16_params{"model.params_dtype=bf16", "train.micro_batch_size=1"};
  const std::vector<StepRecord> fp32 = run_training(tiny_config(bf16_params), MPI_COMM_SELF, 1);
  std::vector<std::string> overrides = bf16_params;
  overrides.push_back("train.main_grads_dtype=bf16");
  const std::vector<StepRecord> bf16 = run_training(tiny_config(overrides), MPI_COMM_SELF, 1);
  ASSERT_EQ(bf16.size(), fp32.size());
  for (size_t i = 0; i < fp32.size(); ++i) {
    EXPECT_NEAR(bf16[i].loss, fp32[i].loss, 2e-2 * fp32[i].loss) << "step " << i + 1;
    EXPECT_NEAR(bf16[i].grad_norm, fp32[i].grad_norm, 2e-2 * fp32[i].grad_norm) << "step " << i + 1;
    EXPECT_FALSE(bf16[i].skipped);
  }
  EXPECT_NE(bf16.front().grad_norm, fp32.front().grad_norm) << "gradients rounded to bf16 as they add up";
  EXPECT_LT(bf16.back().loss, bf16.front().loss);
  const int world = world_size();
  if (world == 1) return;
  const auto expect_close = [](const std::vector<StepRecord>& got, const std::vector<StepRecord>& want) {
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < want.size(); ++i) {
      EXPECT_NEAR(got[i].loss, want[i].loss, 2e-2 * want[i].loss) << "step " << i + 1;
      EXPECT_NEAR(got[i].grad_norm, want[i].grad_norm, 2e-2 * want[i].grad_norm) << "step " << i + 1;
    }
  };
  std::vector<std::string> sharded = overrides;
  sharded.push_back("parallel.distributed_optimizer=true");
  expect_close(run_training(tiny_config(sharded), MPI_COMM_WORLD, world), bf16);
  if (world % 4 != 0) return;
  // The other paths of bf16 gradients: sequence-parallel norm weights summed over tp, the tied
  // embedding's gradients summed between the first and the last pipeline stage.
  SCOPED_TRACE("tp 2 with sequence parallelism, pp 2, tied embeddings");
  std::vector<std::string> tied = overrides;
  tied.push_back("model.tie_embeddings=true");
  const std::vector<StepRecord> one = run_training(tiny_config(tied), MPI_COMM_SELF, 1);
  tied.insert(tied.end(), {"parallel.tp=2", "parallel.sequence_parallel=true", "parallel.pp=2"});
  expect_close(run_training(tiny_config(tied), MPI_COMM_WORLD, world), one);
}

// A step whose loss is NaN (injected into the second step's first micro-batch before backward, so
// every gradient is NaN too) is skipped and counted; the steps after it train on finite numbers,
// in fp32 and in bf16 (the GPU run of docs/reliability.md runs this with --device=cuda).
TEST(TrainFaults, NonFiniteStepIsSkippedAndTrainingGoesOn) {
  struct FaultGuard {
    ~FaultGuard() { set_fault(""); }
  } guard;
  for (const std::string dtype : {"fp32", "bf16"}) {
    SCOPED_TRACE(dtype);
    const Config config = tiny_config({"train.train_iters=4", "model.params_dtype=" + dtype, "train.max_bad_steps=2"});
    const int64_t micro_batches = config.train.global_batch_size / config.train.micro_batch_size;
    const TrainResult clean = train_on(config, MPI_COMM_SELF, 1);
    set_fault(fmt::format("nan@loss#{}", micro_batches + 1));
    const TrainResult faulty = train_on(config, MPI_COMM_SELF, 1, /*keep_final_params=*/true);
    set_fault("");
    ASSERT_EQ(faulty.steps.size(), 4u);
    EXPECT_EQ(faulty.steps[0].loss, clean.steps[0].loss) << "the step before the fault is untouched";
    EXPECT_TRUE(faulty.steps[1].skipped);
    EXPECT_TRUE(std::isnan(faulty.steps[1].loss));
    EXPECT_TRUE(std::isnan(faulty.steps[1].grad_norm)) << "NaN reached the gradients";
    for (const size_t i : {size_t{0}, size_t{2}, size_t{3}}) {
      EXPECT_FALSE(faulty.steps[i].skipped) << "step " << i + 1;
      EXPECT_TRUE(std::isfinite(faulty.steps[i].loss) && std::isfinite(faulty.steps[i].grad_norm)) << "step " << i + 1;
    }
    EXPECT_NE(faulty.steps[2].loss, clean.steps[2].loss) << "step 2's update was skipped";
    for (const RankParam& p : faulty.final_params) {
      EXPECT_TRUE(torch::isfinite(p.value).all().item<bool>()) << p.name << " took a NaN update";
    }
  }
}

TEST(Profile, TracesTheChosenStepOrNamesWhyNot) {
  // Debian's LibTorch has no Kineto: a clear error naming the key; the CUDA wheel writes a trace.
  const std::string path = fmt::format("/tmp/foldtron_trace_{}.json", ::getpid());
  const Config config = tiny_config({"train.train_iters=2", "logging.profile_step=2", "logging.profile_file=" + path});
  try {
    run_training(config, MPI_COMM_SELF, 1);
  } catch (const ConfigError& e) {
    ASSERT_EQ(e.problems().size(), 1u);
    EXPECT_EQ(e.problems()[0].field, "logging.profile_step");
    EXPECT_NE(e.problems()[0].message.find("without Kineto"), std::string::npos) << e.what();
    return;
  }
  std::ifstream trace(path);
  const std::string text((std::istreambuf_iterator<char>(trace)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("traceEvents"), std::string::npos) << "no trace in " << path;
  std::remove(path.c_str());
}

TEST(Optim, LearningRateWarmsUpThenDecaysToMin) {
  TrainConfig t;
  t.lr = 1.0;
  t.min_lr = 0.1;
  t.lr_warmup_iters = 4;
  t.train_iters = 14;
  EXPECT_DOUBLE_EQ(learning_rate(t, 0), 0.25);
  EXPECT_DOUBLE_EQ(learning_rate(t, 3), 1.0);
  EXPECT_NEAR(learning_rate(t, 9), 0.1 + 0.45 * (1 + std::cos(M_PI * 0.5)), 1e-12);  // halfway: cosine
  EXPECT_DOUBLE_EQ(learning_rate(t, 14), 0.1);
  t.lr_decay_style = LrDecay::kLinear;
  EXPECT_NEAR(learning_rate(t, 9), 0.55, 1e-12);
}

}  // namespace
}  // namespace foldtron::testing
