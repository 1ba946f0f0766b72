// Encoder-decoder training on the platform: a task written here (tasks plug into the trainer
// through the Task interface) teaches the encoder-decoder to reverse padded sequences. Over five
// steps, dense and with MoE feed-forward layers, every layout of the job's world size (tp with
// sequence parallelism, the folded tp 2 x ep 2, pp 2 splitting the encoder from the decoder, the
// distributed optimizer) gives the single-process run's losses, router losses, gradient norms
// and gathered gradients within 1e-5.
#include <iostream>

#include <fmt/ranges.h>

#include "config/config_load.h"
#include "layers/embedding.h"
#include "layers/recompute.h"
#include "mpi_test.h"
#include "train_test.h"

namespace foldtron::testing {
namespace {

constexpr int64_t kSource = 8, kTarget = 10;  // padded lengths (even: they split over tp 2)
constexpr int64_t kPad = 0, kStart = 1, kEos = 2;

// Sample i: a source of 4 to 8 tokens drawn from its own seed; the target is the source reversed
// and then end-of-sequence. Sources are padded on the right (masked), targets too (labels -100).
class ReverseTask : public Task {
 public:
  std::string name() const override { return "reverse"; }
  std::string describe() const override { return "reversed random sequences (a test task)"; }
  int64_t num_samples(Split split) const override { return split == Split::kTrain ? 1 << 20 : 0; }

  Batch batch(Split /*split*/, int64_t first, int64_t count, torch::Device device) const override {
    torch::Tensor source = torch::full({count, kSource}, kPad, torch::kLong);
    torch::Tensor mask = torch::zeros({count, kSource}, torch::kBool);
    torch::Tensor decoder = torch::full({count, kTarget}, kPad, torch::kLong);
    torch::Tensor labels = torch::full({count, kTarget}, kIgnoreIndex, torch::kLong);
    for (int64_t r = 0; r < count; ++r) {
      const torch::Tensor tokens = sample(first + r);
      const int64_t n = tokens.size(0);
      source[r].narrow(0, 0, n).copy_(tokens);
      mask[r].narrow(0, 0, n).fill_(true);
      const torch::Tensor target = torch::cat({tokens.flip(0), torch::full({1}, kEos, torch::kLong)});  // [n + 1]
      labels[r].narrow(0, 0, n + 1).copy_(target);
      decoder[r][0] = kStart;
      decoder[r].narrow(0, 1, n).copy_(target.narrow(0, 0, n));
    }
    Batch batch;
    batch.inputs.input_ids = source.t().contiguous().to(device);
    batch.inputs.mask = mask.t().contiguous().to(device);
    batch.inputs.decoder_input_ids = decoder.t().contiguous().to(device);
    batch.inputs.decoder_mask = (labels != kIgnoreIndex).t().contiguous().to(device);
    batch.labels = labels.t().contiguous().to(device);
    return batch;
  }

  double loss_units(Split /*split*/, int64_t first, int64_t count) const override {
    double units = 0;
    for (int64_t i = first; i < first + count; ++i) units += static_cast<double>(sample(i).size(0) + 1);
    return units;
  }

  LossTerms loss(const torch::Tensor& logits, const Batch& batch, double units, Communicator& tp,
                 int64_t vocab) const override {
    return {vocab_parallel_cross_entropy(logits, batch.labels, tp, vocab).sum() / units, {}};
  }
  double flops(int64_t /*first*/, int64_t /*count*/) const override { return 0; }
  double tokens(int64_t /*first*/, int64_t count) const override { return static_cast<double>(count * kSource); }

 private:
  static torch::Tensor sample(int64_t index) {
    at::Generator generator = at::detail::createCPUGenerator(static_cast<uint64_t>(1000 + index));
    const int64_t n = torch::randint(4, kSource + 1, {1}, generator, torch::kLong).item<int64_t>();
    return torch::randint(3, 200, {n}, generator, torch::kLong);
  }
};

Config seq2seq_config(bool moe, const std::vector<std::string>& overrides) {
  std::vector<std::string> all{
      "model.architecture=marian", "model.encoder_layers=2",     "model.num_layers=2",
      "model.norm_position=post",  "model.normalization=layernorm", "model.activation=gelu",
      "model.position_embedding=sinusoidal", "model.linear_bias=true", "model.scale_embeddings=true",
      "model.tie_embeddings=true", "model.pad_token_id=0",       "model.decoder_start_token_id=1",
      "train.train_iters=5",       "train.global_batch_size=8",  "train.seq_length=8",
      "train.lr_warmup_iters=1",    "logging.log_interval=100"};
  all.insert(all.end(), kSmoothAdam.begin(), kSmoothAdam.end());
  if (moe) {
    for (const char* o : {"moe.num_experts=4", "moe.topk=2", "moe.expert_ffn_hidden_size=64",
                                 "moe.router_fp64=true", "moe.aux_loss_coeff=0.01", "moe.z_loss_coeff=0.001"}) {
      all.push_back(o);
    }
  }
  all.insert(all.end(), overrides.begin(), overrides.end());
  return load_config({"tiny-dense", "", all});
}

Recorded train_seq2seq(const Config& config, MPI_Comm base, int world) {
  validate_config(config, world);
  ProcessGroups groups(Topology(layout_of(config.parallel, world)), comm_options(), base);
  TrainState state(config, groups, device());
  ReverseTask task;
  Trainer trainer(state, task);
  auto recorder = std::make_shared<GradientRecorder>();
  trainer.add_hook(recorder);
  Recorded out;
  const int64_t recomputed_before = recompute_count();
  out.result.steps = trainer.run();
  if (config.model.recompute != Recompute::kNone) {
    EXPECT_GT(recompute_count(), recomputed_before) << "model.recompute is set but nothing was recomputed";
  }
  out.grads = std::move(recorder->steps);
  return out;
}

TEST(Seq2SeqTraining, EncoderDecoderLayoutsMatchSingleProcessOverFiveSteps) {
  const int world = world_size();
  struct Case {
    bool moe;
    std::vector<std::string> layout;
  };
  const std::vector<Case> cases{
      {false, {"parallel.tp=2", "parallel.sequence_parallel=true"}},
      {false, {"parallel.pp=2"}},
      {false, {"parallel.pp=2", "parallel.tp=2", "parallel.distributed_optimizer=true"}},
      {true, {"parallel.tp=2", "parallel.ep=2", "parallel.etp=1", "parallel.sequence_parallel=true"}},
      {true, {"parallel.ep=2", "parallel.distributed_optimizer=true"}},
      {true, {"parallel.tp=2", "parallel.ep=4", "parallel.etp=1", "moe.dispatcher=allgather"}},
      // Full recomputation: the encoder's output enters every recomputed decoder block.
      {false, {"parallel.tp=2", "parallel.sequence_parallel=true", "model.recompute=full"}},
      {true, {"parallel.ep=2", "model.recompute=full", "model.recompute_num_layers=1"}},
  };
  std::map<bool, Recorded> references;
  int checked = 0;
  double worst = 0, worst_grad = 0;
  for (const Case& c : cases) {
    const Config config = seq2seq_config(c.moe, c.layout);
    try {
      validate_config(config, world);
    } catch (const ConfigError&) {
      continue;  // does not fit this world
    }
    SCOPED_TRACE(fmt::format("world {} {}: {}", world, c.moe ? "MoE" : "dense", fmt::join(c.layout, " ")));
    if (!references.count(c.moe)) {
      references[c.moe] = train_seq2seq(seq2seq_config(c.moe, {}), MPI_COMM_SELF, 1);
      const auto& first = references[c.moe].result.steps;
      EXPECT_LT(first.back().lm_loss, first.front().lm_loss) << "the loss should fall";
      if (c.moe) {
        EXPECT_GT(first.front().aux_loss, 0) << "the routers' load-balancing loss is counted";
      }
    }
    const Recorded& reference = references[c.moe];
    const Recorded run = train_seq2seq(config, MPI_COMM_WORLD, world);
    worst = std::max(worst, expect_same_steps(run, reference));
    worst_grad = std::max(worst_grad, expect_same_gradients(run, reference));
    ++checked;
  }
  if (checked == 0) GTEST_SKIP() << "no encoder-decoder layout of the cases fits " << world << " ranks";
  if (world_rank() == 0) {
    std::cout << fmt::format("{} layouts; worst relative difference of a loss or norm {:.3g}, of a gradient {:.3g}\n",
                             checked, worst, worst_grad);
  }
}

}  // namespace
}  // namespace foldtron::testing
