// Five-dimensional parallelism: the MoE model trained for five steps with every dimension active
// at once equals the single-process run (losses, router losses, gradient norms, every gathered
// gradient at every step and every final parameter within 1e-5 relative), and the optimizer state per rank shrinks by dp for dense and
// by edp for expert parameters. One layout per world size:
//   8:  attention tp 2 x cp 2 x pp 2,        experts ep 2 x etp 1 (x edp 2) x pp 2
//   16: attention tp 2 x cp 2 x pp 2 x dp 2, experts ep 4 x etp 1 (x edp 2) x pp 2
//   32: attention tp 2 x cp 2 x pp 2 x dp 4, experts ep 4 x etp 2 (x edp 2) x pp 2, vpp 2
// Collectives time out (45 s) rather than hang if the pipeline or a dispatcher deadlocks.
#include <iostream>

#include <fmt/ranges.h>

#include "config/config_load.h"
#include "mpi_test.h"
#include "train_test.h"

namespace foldtron::testing {
namespace {

Config five_d_config(std::vector<std::string> overrides) {
  std::vector<std::string> all{"model.num_layers=4",       "train.train_iters=5",   "train.global_batch_size=8",
                               "train.seq_length=32",      "train.lr_warmup_iters=1",
                               "logging.log_interval=100", "moe.router_fp64=true",  "moe.z_loss_coeff=0.001",
                               "moe.aux_loss_coeff=0.01",  "model.tie_embeddings=true"};
  all.insert(all.end(), kSmoothAdam.begin(), kSmoothAdam.end());  // final parameters are compared
  all.insert(all.end(), overrides.begin(), overrides.end());
  return load_config({"tiny-moe", "", all});
}

std::vector<std::string> layout_for(int ranks) {
  std::vector<std::string> common{"parallel.tp=2", "parallel.cp=2", "parallel.pp=2", "parallel.sequence_parallel=true"};
  std::vector<std::string> experts;
  if (ranks == 8) experts = {"parallel.ep=2", "parallel.etp=1"};
  if (ranks == 16) experts = {"parallel.ep=4", "parallel.etp=1"};
  if (ranks == 32) experts = {"parallel.ep=4", "parallel.etp=2", "parallel.vpp=2"};
  common.insert(common.end(), experts.begin(), experts.end());
  return common;
}

TEST(FiveD, EveryDimensionAtOnceMatchesSingleProcess) {
  const int ranks = world_size();
  if (ranks != 8 && ranks != 16 && ranks != 32) GTEST_SKIP() << "layouts are defined for 8, 16 and 32 ranks";
  const Recorded recorded = train_recorded(five_d_config({}), MPI_COMM_SELF, 1, true);
  const TrainResult& reference = recorded.result;
  EXPECT_LT(reference.steps.back().lm_loss, reference.steps.front().lm_loss) << "the loss should fall";
  for (const std::string cp_comm : {"allgather", "p2p", "a2a"}) {
    std::vector<std::string> overrides = layout_for(ranks);
    overrides.push_back("parallel.cp_comm_type=" + cp_comm);
    // The distributed optimizer on the all-gather run; the ring with full recomputation.
    if (cp_comm == "allgather") overrides.push_back("parallel.distributed_optimizer=true");
    if (cp_comm == "p2p") overrides.push_back("model.recompute=full");
    SCOPED_TRACE(fmt::format("world {}: {}", ranks, fmt::join(overrides, " ")));
    const Recorded run = train_recorded(five_d_config(overrides), MPI_COMM_WORLD, ranks, true);
    const TrainResult& result = run.result;
    const double grads = expect_same_gradients(run, recorded);
    ASSERT_EQ(result.steps.size(), reference.steps.size());
    double worst = 0;
    for (size_t i = 0; i < result.steps.size(); ++i) {
      const StepRecord &got = result.steps[i], &want = reference.steps[i];
      for (const auto& [a, b] : {std::pair{got.lm_loss, want.lm_loss}, std::pair{got.aux_loss, want.aux_loss},
                                 std::pair{got.z_loss, want.z_loss}, std::pair{got.grad_norm, want.grad_norm}}) {
        EXPECT_NEAR(a, b, 1e-5 * std::abs(b)) << "step " << i + 1;
        worst = std::max(worst, std::abs(a - b) / std::abs(b));
      }
    }
    std::map<std::string, int64_t> covered;
    const double params = final_param_difference(result, reference, &covered);
    EXPECT_LT(params, 1e-5) << "final parameters";
    EXPECT_EQ(uncovered_params(reference, covered), std::vector<std::string>{});
    torch::Tensor worst_all = torch::tensor({worst, params, grads}, torch::kDouble);
    world().all_reduce(worst_all, ReduceOp::kMax);
    if (world_rank() == 0) {
      std::cout << fmt::format("world {} cp {}: worst relative difference of losses/norms {:.3g}, of gradients "
                               "{:.3g}, of final parameters {:.3g}\n",
                               ranks, cp_comm, worst_all[0].item<double>(), worst_all[2].item<double>(),
                               worst_all[1].item<double>());
    }
  }
}

TEST(FiveD, OptimizerStateShrinksByDpAndEdp) {
  const int world = world_size();
  if (world != 8 && world != 16 && world != 32) GTEST_SKIP() << "layouts are defined for 8, 16 and 32 ranks";
  std::vector<std::string> plain = layout_for(world), sharded = layout_for(world);
  plain.push_back("train.train_iters=1");
  sharded.push_back("train.train_iters=1");
  sharded.push_back("parallel.distributed_optimizer=true");
  const TrainResult a = train_on(five_d_config(plain), MPI_COMM_WORLD, world);
  const TrainResult b = train_on(five_d_config(sharded), MPI_COMM_WORLD, world);
  const Config config = five_d_config(plain);
  const ParallelLayout layout = layout_of(config.parallel, world);
  // Dense state shards over dp x cp, expert state over edp.
  EXPECT_EQ(b.dense_state_bytes * layout.dp() * layout.cp, a.dense_state_bytes);
  EXPECT_EQ(b.expert_state_bytes * layout.edp(), a.expert_state_bytes);
  EXPECT_GT(b.expert_state_bytes, 0);
}

}  // namespace
}  // namespace foldtron::testing
