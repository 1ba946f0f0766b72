// The trainer and the data: data-parallel ranks read disjoint samples whose union is the global
// batch (training and evaluation, in every layout of the job); the validation loss equals the
// mean next-token loss over the validation samples computed by hand, and is the same in every
// layout; evaluating during training changes nothing about the training.
#include <set>

#include <fmt/ranges.h>
#include <mpi.h>

#include "config/config_load.h"
#include "layers/embedding.h"
#include "mpi_test.h"
#include "train_test.h"
#include "training/lm_task.h"

namespace foldtron::testing {
namespace {

// kSmoothAdam (train_test.h): layouts train to the same weights within rounding, so their
// validation losses can be compared closely.
Config data_config(std::vector<std::string> overrides) {
  std::vector<std::string> all{"model.num_layers=2", "train.train_iters=4", "train.global_batch_size=8",
                               "train.seq_length=32", "logging.log_interval=100", "train.eval_iters=2",
                               "data.split=90,10", "train.micro_batch_size=2"};
  all.insert(all.end(), kSmoothAdam.begin(), kSmoothAdam.end());
  all.insert(all.end(), overrides.begin(), overrides.end());
  return load_config({"tiny-moe", "", all});
}

// The language-model task, recording which samples this rank asked for.
class RecordingTask : public LmTask {
 public:
  using LmTask::LmTask;
  Batch batch(Split split, int64_t first, int64_t count, torch::Device device) const override {
    for (int64_t i = first; i < first + count; ++i) read[split].insert(i);
    return LmTask::batch(split, first, count, device);
  }
  mutable std::map<Split, std::set<int64_t>> read;
};

// Over all ranks: ranks of one dp coordinate read the same samples of [first, first + count),
// different dp coordinates disjoint ones, and together all of them.
void expect_partition(const std::set<int64_t>& mine, int64_t dp_coordinate, int64_t first, int64_t count,
                      const std::string& what) {
  std::vector<int> mask(static_cast<size_t>(count) + 1, 0);
  mask[0] = static_cast<int>(dp_coordinate);
  for (int64_t i : mine) {
    ASSERT_TRUE(i >= first && i < first + count) << what << ": sample " << i << " is outside the batch";
    mask[static_cast<size_t>(i - first) + 1] = 1;
  }
  const int world = world_size();
  std::vector<int> all(mask.size() * static_cast<size_t>(world));
  MPI_Allgather(mask.data(), static_cast<int>(mask.size()), MPI_INT, all.data(), static_cast<int>(mask.size()), MPI_INT,
                MPI_COMM_WORLD);
  std::map<int, std::vector<int>> by_dp;
  for (int r = 0; r < world; ++r) {
    const std::vector<int> row(all.begin() + r * static_cast<int64_t>(mask.size()) + 1,
                               all.begin() + (r + 1) * static_cast<int64_t>(mask.size()));
    const int dp = all[static_cast<size_t>(r) * mask.size()];
    if (by_dp.count(dp)) {
      EXPECT_EQ(by_dp[dp], row) << what << ": ranks of dp coordinate " << dp << " read different samples";
    }
    by_dp[dp] = row;
  }
  std::vector<int> union_count(static_cast<size_t>(count), 0);
  for (const auto& [dp, row] : by_dp) {
    for (size_t i = 0; i < row.size(); ++i) union_count[i] += row[i];
  }
  EXPECT_EQ(union_count, std::vector<int>(static_cast<size_t>(count), 1)) << what;
}

TEST(DataTrain, DataParallelRanksReadDisjointSamplesWhoseUnionIsTheGlobalBatch) {
  const int world = world_size();
  std::vector<std::vector<std::string>> layouts{{}};
  if (world == 4) {
    layouts = {{}, {"parallel.tp=2"}, {"parallel.pp=2"}, {"parallel.ep=4"}};
  }
  for (const auto& layout : layouts) {
    const Config config = data_config(layout);
    validate_config(config, world);
    const Topology topology(layout_of(config.parallel, world));
    ProcessGroups groups(topology, comm_options());
    TrainState state(config, groups, device());
    RecordingTask task(config);
    Trainer trainer(state, task);
    const std::string what = layout.empty() ? std::string("dp only") : layout.front();
    for (int step = 0; step < 3; ++step) {
      const int64_t first = state.consumed_samples;
      task.read.clear();
      trainer.step();
      expect_partition(task.read[Split::kTrain], groups.coords().dp, first, 8, what + fmt::format(", step {}", step));
    }
    task.read.clear();
    trainer.evaluate(Split::kValid);
    expect_partition(task.read[Split::kValid], groups.coords().dp, 0, 16, what + ", evaluation");
  }
}

// The mean next-token loss over validation samples [0, count), one sample at a time (pp 1, tp 1).
double loss_by_hand(Model& model, const LmTask& task, int64_t count, int64_t seq, int64_t vocab) {
  torch::NoGradGuard no_grad;
  model.eval();
  double total = 0;
  for (int64_t i = 0; i < count; ++i) {
    const Batch batch = task.batch(Split::kValid, i, 1, device());
    ForwardState state;
    const torch::Tensor logits = model.logits(batch.inputs, state).to(torch::kDouble).narrow(-1, 0, vocab);
    total += torch::nn::functional::cross_entropy(logits.reshape({-1, vocab}), batch.labels.reshape({-1}),
                                                  torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum))
                 .item<double>();
  }
  model.train();
  return total / static_cast<double>(count * seq);
}

TEST(DataTrain, ValidationLossIsTheMeanLossOverTheValidationSamples) {
  const Config config = data_config({"train.eval_interval=2"});
  // By hand, on one rank.
  {
    const Topology topology(layout_of(config.parallel, 1));
    ProcessGroups groups(topology, comm_options(), MPI_COMM_SELF);
    TrainState state(config, groups, device());
    LmTask task(config);
    Trainer trainer(state, task);
    trainer.step();
    const EvalRecord eval = trainer.evaluate(Split::kValid);
    EXPECT_EQ(eval.samples, 16);
    EXPECT_EQ(eval.units, 16.0 * 32);
    const double expected = loss_by_hand(*state.model, task, 16, 32, config.model.vocab_size);
    EXPECT_NEAR(eval.loss, expected, 1e-5 * expected) << "evaluate() " << eval.loss << " vs by hand " << expected;
  }
  // During training: the same losses as a run without evaluation, and the same validation loss
  // in every layout as on one rank.
  const TrainResult reference = train_on(config, MPI_COMM_SELF, 1);
  ASSERT_EQ(reference.evaluations.size(), 2u);
  EXPECT_EQ(reference.evaluations[0].step, 2);
  EXPECT_EQ(reference.evaluations[1].step, 4);
  const TrainResult plain = train_on(data_config({}), MPI_COMM_SELF, 1);
  ASSERT_EQ(plain.steps.size(), reference.steps.size());
  for (size_t i = 0; i < plain.steps.size(); ++i) EXPECT_EQ(plain.steps[i].loss, reference.steps[i].loss) << i;
  const int world = world_size();
  if (world == 1) return;
  for (const std::vector<std::string>& layout :
       {std::vector<std::string>{"parallel.tp=2", "parallel.sequence_parallel=true"},
        std::vector<std::string>{"parallel.pp=2"}, std::vector<std::string>{"parallel.ep=4"}}) {
    std::vector<std::string> overrides{"train.eval_interval=2"};
    overrides.insert(overrides.end(), layout.begin(), layout.end());
    const TrainResult got = train_on(data_config(overrides), MPI_COMM_WORLD, world);
    ASSERT_EQ(got.evaluations.size(), 2u);
    for (size_t i = 0; i < 2; ++i) {
      EXPECT_NEAR(got.evaluations[i].loss, reference.evaluations[i].loss, 1e-5 * reference.evaluations[i].loss)
          << fmt::format("{} evaluation {}", fmt::join(layout, " "), i);
    }
  }
}

}  // namespace
}  // namespace foldtron::testing
