// Distributed checkpoints under mpirun:
//  - resume: a run stopped by SIGTERM after step 3 (the signal reaching rank 0 only) and resumed
//    from its save folder, or from an older checkpoint in it, gives the same losses, gradient
//    norms and final parameters, bit for bit, as the run that never stopped (dense and MoE, the
//    distributed optimizer, dropout on: the RNG streams and the data position come back too; the
//    MoE run saves asynchronously), and the metrics file reads as one run;
//  - resharding (8 ranks): checkpoints saved under six layouts (tp/ep/etp/pp, cp with the
//    distributed optimizer, interleaved uneven pp, tp 4 with sequence parallelism and ep 8, dp 8,
//    one rank) each load into three other layouts; saved again at once they hold exactly the same
//    global tensors (every parameter, main weight and moment), and training goes on to the losses
//    of the saving layout within 1e-6.
#include <unistd.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "checkpoint/distributed.h"
#include "checkpoint/model_state.h"
#include "config/config_load.h"
#include "core/files.h"
#include "mpi_test.h"
#include "train_test.h"
#include "training/checkpointing.h"
#include "training/lm_task.h"

namespace foldtron::testing {
namespace {
namespace fs = std::filesystem;

// A folder for this test binary's job, empty, the same on every rank.
std::string job_dir(const std::string& name) {
  const auto pid = world().all_gather_ints({static_cast<int64_t>(::getpid())})[0][0];
  const fs::path dir = fs::temp_directory_path() / fmt::format("foldtron_test_checkpoint_{}", pid) / name;
  if (world_rank() == 0) {
    remove_tree(dir);
    fs::create_directories(dir);
  }
  world().barrier();
  return dir.string();
}

// Sends SIGTERM to this process on rank 0 after step `step` (as a scheduler's preemption would
// reach one node first); training must save and stop on every rank at the end of that step.
class TerminateAfter : public StepHook {
 public:
  explicit TerminateAfter(int64_t step) : step_(step) {}
  std::string name() const override { return "terminate"; }
  void after_step(TrainState& state, const StepRecord& /*record*/) override {
    if (state.step == step_ && state.groups.world_rank() == 0) std::raise(SIGTERM);
  }

 private:
  int64_t step_;
};

TrainResult run(const Config& config, const std::vector<std::shared_ptr<StepHook>>& hooks = {}) {
  validate_config(config, world_size());
  ProcessGroups groups(Topology(layout_of(config.parallel, world_size())), comm_options());
  TrainOptions options;
  options.device = device();
  options.keep_final_params = true;
  options.hooks = hooks;
  return train(config, groups, options);
}

void expect_same_steps(const std::vector<StepRecord>& got, const std::vector<StepRecord>& want, size_t first) {
  ASSERT_LE(got.size() + first, want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].step, want[first + i].step);
    EXPECT_EQ(got[i].loss, want[first + i].loss) << "step " << got[i].step;
    EXPECT_EQ(got[i].grad_norm, want[first + i].grad_norm) << "step " << got[i].step;
    EXPECT_EQ(got[i].lr, want[first + i].lr) << "step " << got[i].step;
  }
}

void expect_same_params(const TrainResult& got, const TrainResult& want) {
  ASSERT_EQ(got.final_params.size(), want.final_params.size());
  for (size_t i = 0; i < got.final_params.size(); ++i) {
    EXPECT_EQ(got.final_params[i].name, want.final_params[i].name);
    EXPECT_TRUE(torch::equal(got.final_params[i].value, want.final_params[i].value)) << got.final_params[i].name;
  }
}

TEST(CheckpointResume, StoppedRunsResumeBitExactly) {
  const int ranks = world_size();
  const std::string tp = ranks % 2 == 0 ? "2" : "1";
  const std::vector<std::string> common{"train.train_iters=6", "train.lr_decay_iters=6", "train.global_batch_size=8",
                                        "train.seq_length=32", "train.lr_warmup_iters=1", "logging.log_interval=1",
                                        "model.hidden_dropout=0.1", "model.attention_dropout=0.1",
                                        "parallel.distributed_optimizer=true", "parallel.tp=" + tp};
  struct Case {
    std::string preset;
    std::vector<std::string> extra;
    std::string saving;  // more overrides of the runs that save
  };
  const std::string ep = std::to_string(ranks % 4 == 0 ? 4 : ranks % 2 == 0 ? 2 : 1);
  for (const Case& c : {Case{"tiny-dense", {"model.num_layers=2"}, "checkpoint.async=false"},
                        Case{"tiny-moe",
                             {"model.num_layers=2", "parallel.ep=" + ep, "parallel.etp=1", "moe.expert_bias=true",
                              "moe.expert_bias_update_rate=0.01"},
                             "checkpoint.async=true"}}) {
    SCOPED_TRACE(c.preset);
    std::vector<std::string> overrides = common;
    overrides.insert(overrides.end(), c.extra.begin(), c.extra.end());
    const auto config_with = [&](std::vector<std::string> more) {
      std::vector<std::string> all = overrides;
      all.insert(all.end(), more.begin(), more.end());
      return load_config({c.preset, "", all});
    };
    const std::string dir = job_dir(c.preset);
    const std::string save = dir + "/save", metrics = dir + "/metrics.jsonl";
    const TrainResult whole = run(config_with({}));
    ASSERT_EQ(whole.steps.size(), 6u);

    // Stopped by SIGTERM after step 3 (checkpoints at steps 2 and 3).
    const TrainResult stopped =
        run(config_with({"checkpoint.save=" + save, "checkpoint.save_interval=2", "logging.metrics_file=" + metrics,
                         c.saving}),
            {std::make_shared<TerminateAfter>(3)});
    EXPECT_TRUE(stopped.stopped);
    expect_same_steps(stopped.steps, whole.steps, 0);
    EXPECT_EQ(stopped.steps.size(), 3u);
    EXPECT_EQ(resolve_checkpoint(save), save + "/iter_0000003");

    // An older checkpoint, kept aside before the resumed run's keep_last removes it.
    const std::string older = dir + "/older";
    if (world_rank() == 0) fs::copy(save + "/iter_0000002", older, fs::copy_options::recursive);
    world().barrier();

    // Resumed from the save folder's latest, saving on (every 2 steps and at the end).
    const TrainResult resumed =
        run(config_with({"checkpoint.load=" + save, "checkpoint.save=" + save, "checkpoint.save_interval=2", c.saving}));
    EXPECT_FALSE(resumed.stopped);
    EXPECT_EQ(resumed.steps.size(), 3u);
    expect_same_steps(resumed.steps, whole.steps, 3);
    expect_same_params(resumed, whole);
    if (world_rank() == 0) {
      std::set<std::string> entries;
      for (const auto& entry : fs::directory_iterator(save)) entries.insert(entry.path().filename().string());
      EXPECT_EQ(entries, (std::set<std::string>{"iter_0000004", "iter_0000006", "latest"}))
          << "keep_last 2 keeps the two newest complete checkpoints";
    }
    world().barrier();

    // From the older checkpoint (step 2): the metrics file drops the stopped run's step 3 and
    // reads as one run.
    const TrainResult from_older = run(config_with({"checkpoint.load=" + older, "logging.metrics_file=" + metrics}));
    EXPECT_EQ(from_older.steps.size(), 4u);
    expect_same_steps(from_older.steps, whole.steps, 2);
    expect_same_params(from_older, whole);
    if (world_rank() == 0) {
      std::ifstream in(metrics);
      std::vector<int64_t> steps;
      for (std::string line; std::getline(in, line);) {
        const auto record = nlohmann::json::parse(line);
        steps.push_back(record.at("step").get<int64_t>());
        EXPECT_EQ(record.at("loss").get<double>(), whole.steps[static_cast<size_t>(steps.back() - 1)].loss)
            << "step " << steps.back();
      }
      EXPECT_EQ(steps, (std::vector<int64_t>{1, 2, 3, 4, 5, 6}));
    }
    world().barrier();
  }
}


// A layout of the resharding matrix: its overrides, and whether it is the one-rank job.
struct Layout {
  std::string name;
  std::vector<std::string> overrides;
  bool single = false;
};

Config reshard_config(const Layout& layout, std::vector<std::string> more) {
  // Six layers, so pp 2 x vpp 2 can split them unevenly; routing in fp64 (no near-tie flips);
  // kSmoothAdam keeps the updates smooth (train_test.h).
  std::vector<std::string> all{"model.num_layers=6", "train.train_iters=4", "train.lr_decay_iters=4",
                               "train.global_batch_size=8", "train.seq_length=32", "train.lr_warmup_iters=1",
                               "logging.log_interval=100", "moe.router_fp64=true", "moe.expert_bias=true",
                               "moe.expert_bias_update_rate=0.01"};
  all.insert(all.end(), kSmoothAdam.begin(), kSmoothAdam.end());
  all.insert(all.end(), layout.overrides.begin(), layout.overrides.end());
  all.insert(all.end(), more.begin(), more.end());
  return load_config({"tiny-moe", "", all});
}

// Loads `from` into `config`'s layout, saves the state again at once into `resaved` (unchanged),
// and trains on to train_iters: the way `train` does, with the checkpointer at hand.
std::vector<StepRecord> load_resave_continue(const Config& config, const std::string& from, const std::string& resaved,
                                             MPI_Comm base, int world) {
  validate_config(config, world);
  ProcessGroups groups(Topology(layout_of(config.parallel, world)), comm_options(), base);
  TrainState state(config, groups, device());
  Checkpointer checkpointer(state);
  EXPECT_TRUE(checkpointer.load(from));
  state.config.checkpoint.save = resaved;
  checkpointer.save();
  LmTask task(config);
  Trainer trainer(state, task);
  trainer.add_hook(std::make_shared<ExpertBiasUpdate>());
  return trainer.run();
}

// Every global tensor of the two checkpoints, compared exactly (rank 0 reads them).
void expect_same_tensors(const std::string& a_dir, const std::string& b_dir) {
  const CheckpointReader a(resolve_checkpoint(a_dir)), b(resolve_checkpoint(b_dir));
  ASSERT_EQ(a.tensors(), b.tensors());
  int64_t optimizer = 0;
  for (const std::string& name : a.tensors()) {
    EXPECT_TRUE(torch::equal(a.read_full(name), b.read_full(name))) << name;
    optimizer += name.rfind("optim.", 0) == 0 ? 1 : 0;
  }
  EXPECT_GT(optimizer, 0) << "no optimizer state was compared";
}

TEST(CheckpointReshard, EveryLayoutLoadsIntoOthersExactly) {
  if (world_size() != 8) GTEST_SKIP() << "the resharding matrix runs on 8 ranks";
  const std::string distributed = "parallel.distributed_optimizer=true";
  const std::vector<Layout> layouts{
      {"tp2 ep4 etp1 pp2", {"parallel.tp=2", "parallel.ep=4", "parallel.etp=1", "parallel.pp=2"}},
      {"cp2 ep2 distopt", {"parallel.cp=2", "parallel.ep=2", distributed}},
      {"pp2 vpp2 uneven", {"parallel.pp=2", "parallel.vpp=2", "parallel.pipeline_layers=[1,2,2,1]", distributed}},
      {"tp4 sp ep8 etp1", {"parallel.tp=4", "parallel.sequence_parallel=true", "parallel.ep=8", "parallel.etp=1"}},
      {"dp8", {}},
      {"one rank", {}, true},
  };
  const std::string dir = job_dir("reshard");
  const auto on_layout = [&](const Layout& layout, const std::function<void(MPI_Comm, int)>& body) {
    if (!layout.single) {
      body(MPI_COMM_WORLD, world_size());
    } else if (world_rank() == 0) {
      body(MPI_COMM_SELF, 1);
    }
    world().barrier();
  };
  // Each layout trains 2 steps and saves; its own continuation (same layout, restored RNG) gives
  // the losses of steps 3 and 4 that every other layout must reach.
  std::vector<std::vector<StepRecord>> own(layouts.size());
  for (size_t s = 0; s < layouts.size(); ++s) {
    SCOPED_TRACE("saved under " + layouts[s].name);
    const std::string save = fmt::format("{}/{}", dir, s);
    on_layout(layouts[s], [&](MPI_Comm base, int world) {
      const Config config = reshard_config(layouts[s], {"train.train_iters=2", "checkpoint.save=" + save});
      validate_config(config, world);
      ProcessGroups groups(Topology(layout_of(config.parallel, world)), comm_options(), base);
      TrainOptions options;
      options.device = device();
      train(config, groups, options);
      own[s] = load_resave_continue(reshard_config(layouts[s], {}), save, fmt::format("{}/{}_{}", dir, s, s), base,
                                    world);
    });
  }
  // The one-rank layout's losses are known on rank 0 only: send them to every rank.
  for (size_t s = 0; s < layouts.size(); ++s) {
    torch::Tensor losses = torch::zeros({2}, torch::kDouble);
    if (world_rank() == 0 && own[s].size() == 2) losses = torch::tensor({own[s][0].loss, own[s][1].loss}, torch::kDouble);
    world().all_reduce(losses, ReduceOp::kMax);  // rank 0's values (all others hold zeros or the same)
    own[s].resize(2);
    own[s][0].loss = losses[0].item<double>();
    own[s][1].loss = losses[1].item<double>();
  }
  int loaded = 0;
  for (size_t s = 0; s < layouts.size(); ++s) {
    for (size_t k = 1; k <= 3; ++k) {
      const size_t t = (s + k) % layouts.size();
      SCOPED_TRACE(fmt::format("saved under {}, loaded under {}", layouts[s].name, layouts[t].name));
      const std::string resaved = fmt::format("{}/{}_{}", dir, s, t);
      on_layout(layouts[t], [&](MPI_Comm base, int world) {
        const std::vector<StepRecord> steps =
            load_resave_continue(reshard_config(layouts[t], {}), fmt::format("{}/{}", dir, s), resaved, base, world);
        ASSERT_EQ(steps.size(), 2u);
        for (size_t i = 0; i < 2; ++i) {
          EXPECT_NEAR(steps[i].loss, own[s][i].loss, 1e-6 * std::abs(own[s][i].loss)) << "step " << steps[i].step;
        }
      });
      if (world_rank() == 0) expect_same_tensors(fmt::format("{}/{}_{}", dir, s, s), resaved);
      world().barrier();
      ++loaded;
    }
  }
  EXPECT_EQ(loaded, 18);
}

}  // namespace
}  // namespace foldtron::testing
