// The discourse classifiers under MPI: the memory read against a hand computation, the bank
// sharded over 2 and 4 ranks against the whole bank (values and gradients), tiny training runs in
// dp and tp x dp layouts against one process, and a saved classifier predicting what it did in
// training. Run at 1, 2 and 4 ranks.
#include <cmath>
#include <filesystem>
#include <random>

#include <mpi.h>
#include <unistd.h>

#include "config/config_load.h"
#include "core/errors.h"
#include "core/fault.h"
#include "core/files.h"
#include "mpi_test.h"
#include "parallel/process_groups.h"
#include "parallel/topology.h"
#include "config/layout.h"
#include "tasks/discourse/classifier.h"
#include "tasks/discourse/memory.h"
#include "tasks/discourse/trainer.h"
#include "training/checkpointing.h"
#include "training/train_state.h"

namespace foldtron {
namespace {

namespace fs = std::filesystem;
using testing::close;
using testing::comm_options;
using testing::world;
using testing::world_rank;
using testing::world_size;

// ---- the memory read ----

TEST(DiscourseMemory, ReadMatchesAHandComputation) {
  ProcessGroups groups(Topology(layout_of(ParallelConfig{}, 1)), comm_options(), MPI_COMM_SELF);
  MemoryBank bank(3, 2, 2, groups.dp(), torch::kCPU);
  const torch::Tensor keys = torch::tensor({{1.0f, 0.0f}, {0.0f, 1.0f}, {1.0f, 1.0f}});
  const torch::Tensor labels = torch::tensor({0, 1, 1}, torch::kLong);
  const torch::Tensor w = torch::eye(2), u = torch::tensor({0.5f, 0.0f});
  const torch::Tensor q = torch::tensor({{2.0f, 1.0f}});
  // Slots 0 and 1 active, one per class: both weigh 1. s = q.k + u.k: 2.5 and 1.
  bank.store(keys, labels, torch::tensor({true, true, false}));
  const torch::Tensor none = torch::tensor({{-1, -1}}, torch::kLong);
  MemoryRead read = bank.read(q, w, u, none);
  const double a0 = std::exp(2.5) / (std::exp(2.5) + std::exp(1.0)), a1 = 1 - a0;
  EXPECT_TRUE(close(read.key, torch::tensor({{static_cast<float>(a0), static_cast<float>(a1)}}), 1e-6, 1e-6));
  EXPECT_TRUE(close(read.value, torch::tensor({{static_cast<float>(a0), static_cast<float>(a1)}}), 1e-6, 1e-6));
  EXPECT_TRUE(read.found.all().item<bool>());
  // Its own slot left out: only slot 1 remains; slots 0..1 left out: nothing.
  read = bank.read(q, w, u, torch::tensor({{0, 0}}, torch::kLong));
  EXPECT_TRUE(close(read.key, torch::tensor({{0.0f, 1.0f}})));
  EXPECT_TRUE(close(read.value, torch::tensor({{0.0f, 1.0f}})));
  EXPECT_FALSE(bank.read(q, w, u, torch::tensor({{0, 1}}, torch::kLong)).found.any().item<bool>());
  // Every slot active: class 0 has 1 of 3 (w = 3 / (2 * 1) = 1.5), class 1 has 2 (w = 0.75).
  bank.store(keys, labels, torch::tensor({true, true, true}));
  read = bank.read(q, w, u, none);
  const double e0 = 1.5 * std::exp(2.5), e1 = 0.75 * std::exp(1.0), e2 = 0.75 * std::exp(3.5), z = e0 + e1 + e2;
  EXPECT_TRUE(close(read.key, torch::tensor({{static_cast<float>((e0 + e2) / z), static_cast<float>((e1 + e2) / z)}}),
                    1e-6, 1e-6));
  EXPECT_TRUE(close(read.value, torch::tensor({{static_cast<float>(e0 / z), static_cast<float>((e1 + e2) / z)}}),
                    1e-6, 1e-6));
  // No active slot: nothing found, zero read-outs.
  bank.store(keys, labels, torch::tensor({false, false, false}));
  read = bank.read(q, w, u, none);
  EXPECT_FALSE(read.found.any().item<bool>());
  EXPECT_EQ(read.key.abs().sum().item<float>(), 0.0f);
}

// Every rank's queries: rank 1 has none, the others three; each excludes a slot or none.
torch::Tensor queries_of(int64_t rank, int64_t h) {
  return rank == 1 ? torch::zeros({0, h}, torch::kDouble) : testing::data(100 + rank, {3, h}, torch::kDouble);
}
// Every rank's excluded slot ranges: one slot, none, and two slots (across a shard border).
torch::Tensor excluded_of(int64_t rank) {
  return rank == 1 ? torch::zeros({0, 2}, torch::kLong)
                   : torch::tensor(std::vector<int64_t>{rank % 11, rank % 11, -1, -1, (3 * rank + 5) % 10,
                                                        (3 * rank + 5) % 10 + 1},
                                   torch::kLong)
                         .reshape({3, 2});
}

TEST(DiscourseMemory, ShardedBankEqualsTheWholeBank) {
  const int64_t slots = 11, h = 6, k = 3, world_n = world_size(), rank = world_rank();
  // In fp64, so that the sharded sums and the whole bank's agree to rounding.
  const torch::Tensor keys = testing::data(1, {slots, h}, torch::kDouble);
  const torch::Tensor labels = torch::tensor({0, 1, 2, 0, 1, 2, 0, 0, 1, 2, 1}, torch::kLong);
  const torch::Tensor active = torch::tensor({1, 1, 0, 1, 1, 1, 0, 1, 1, 1, 1}, torch::kBool);
  const torch::Tensor w0 = testing::data(2, {h, h}, torch::kDouble), u0 = testing::data(3, {h}, torch::kDouble);
  MemoryBank bank(slots, h, k, world(), torch::kCPU);
  const auto [first, end] = bank.range_of(rank);
  bank.store(keys.narrow(0, first, end - first), labels.narrow(0, first, end - first),
             active.narrow(0, first, end - first));
  EXPECT_TRUE(close(bank.log_weights(), memory_log_weights(labels, active, k).narrow(0, first, end - first)));
  // The sharded read of this rank's queries and its gradients.
  const torch::Tensor w = w0.clone().requires_grad_(true), u = u0.clone().requires_grad_(true);
  const torch::Tensor q = queries_of(rank, h).requires_grad_(true);
  const MemoryRead read = bank.read(q, w, u, excluded_of(rank));
  const torch::Tensor gk = testing::data(200 + rank, {q.size(0), h}, torch::kDouble);
  const torch::Tensor gv = testing::data(300 + rank, {q.size(0), k}, torch::kDouble);
  ((read.key * gk).sum() + (read.value * gv).sum()).backward();
  torch::Tensor dw = w.grad().clone(), du = u.grad().clone();
  world().all_reduce(dw);  // each rank holds its shard's share
  world().all_reduce(du);
  // The whole bank, every rank's queries, plain autograd.
  const torch::Tensor wr = w0.clone().requires_grad_(true), ur = u0.clone().requires_grad_(true);
  const torch::Tensor log_w = memory_log_weights(labels, active, k);
  torch::Tensor total = torch::zeros({}, torch::kDouble);
  torch::Tensor my_dq;
  for (int64_t r = 0; r < world_n; ++r) {
    const torch::Tensor qr = queries_of(r, h).requires_grad_(true);
    const MemoryRead ref = memory_read_reference(qr, wr, ur, keys, labels, log_w, excluded_of(r), k);
    const torch::Tensor loss = (ref.key * testing::data(200 + r, {qr.size(0), h}, torch::kDouble)).sum() +
                               (ref.value * testing::data(300 + r, {qr.size(0), k}, torch::kDouble)).sum();
    if (r == rank) {
      EXPECT_TRUE(close(read.key, ref.key, 1e-10, 1e-12));
      EXPECT_TRUE(close(read.value, ref.value, 1e-10, 1e-12));
      EXPECT_TRUE(torch::equal(read.found, ref.found));
      my_dq = torch::autograd::grad({loss}, {qr}, {}, true)[0];
    }
    total = total + loss;
  }
  total.backward();
  EXPECT_TRUE(close(q.grad().defined() ? q.grad() : torch::zeros_like(q), my_dq, 1e-10, 1e-12));
  EXPECT_TRUE(close(dw, wr.grad(), 1e-10, 1e-12));
  EXPECT_TRUE(close(du, ur.grad(), 1e-10, 1e-12));
}

// ---- training ----

const fs::path& fixture_dir() {
  static const fs::path dir = [] {
    const fs::path d = fs::temp_directory_path() / fmt::format("foldtron_discourse_{}", getppid());
    return d;
  }();
  return dir;
}

// A tiny relation corpus whose class shows in a cue word of Arg2 and in its connective.
void write_corpus(const fs::path& dir) {
  const std::vector<std::string> senses{"Comparison.Contrast", "Contingency.Cause.Reason", "Expansion.Conjunction",
                                        "Temporal.Asynchronous.Precedence"};
  const std::vector<std::string> cues{"yet", "hence", "moreover", "afterwards"};
  const std::vector<std::string> connectives{"but", "because", "and", "then"};
  const std::vector<std::string> lexicon{"the", "system", "reads", "files", "users", "write", "data", "quickly",
                                         "server", "starts", "packages", "install", "it", "works", "now", "old"};
  std::mt19937 rng(7);
  fs::create_directories(dir);
  for (const auto& [split, count] : std::vector<std::pair<std::string, int>>{{"train", 48}, {"dev", 16}, {"test", 16}}) {
    std::vector<DiscourseRelation> relations;
    for (int i = 0; i < count; ++i) {
      const size_t c = rng() % 4;
      const auto sentence = [&](int n) {
        std::string s;
        for (int w = 0; w < n; ++w) s += (w ? " " : "") + lexicon[rng() % lexicon.size()];
        return s;
      };
      DiscourseRelation r;
      r.id = fmt::format("{}:{}", split, i);
      r.doc_id = split;
      r.type = "Implicit";
      r.senses = {senses[c]};
      r.arg1 = sentence(3 + static_cast<int>(rng() % 5)) + ".";
      r.arg2 = cues[c] + " " + sentence(2 + static_cast<int>(rng() % 4)) + ",";
      r.connective = connectives[c];
      relations.push_back(r);
    }
    write_conll_relations((dir / (split + ".json")).string(), relations);
  }
}

// A randomly initialized tiny encoder-decoder saved as a checkpoint (byte tokenizer).
void write_encoder(const fs::path& dir) {
  Config c = load_config({"tiny-dense", "", {"model.architecture=marian", "model.encoder_layers=2", "model.num_layers=2",
                                            "model.norm_position=post", "model.normalization=layernorm",
                                            "model.activation=gelu", "model.position_embedding=learned",
                                            "model.max_position_embeddings=64", "model.linear_bias=true",
                                            "model.embedding_norm=true", "model.tie_embeddings=true",
                                            "data.tokenizer=byte", "train.global_batch_size=1",
                                            "checkpoint.save=" + dir.string()}});
  ProcessGroups groups(Topology(layout_of(c.parallel, 1)), comm_options(), MPI_COMM_SELF);
  TrainState state(c, groups, torch::kCPU);
  Checkpointer(state).save();
}

void write_fixtures() {
  if (world_rank() == 0) {
    remove_tree(fixture_dir());
    write_corpus(fixture_dir() / "corpus");
    write_encoder(fixture_dir() / "encoder");
  }
  world().barrier();
}

Config discourse_config(const std::vector<std::string>& overrides) {
  std::vector<std::string> all{"discourse.data=" + (fixture_dir() / "corpus").string(),
                               "discourse.encoder=" + (fixture_dir() / "encoder").string(),
                               "discourse.word_dim=8",
                               "discourse.char_dim=4",
                               "discourse.char_channels=4",
                               "discourse.channels=8",
                               "discourse.hidden=8",
                               "discourse.conv_layers=2",
                               "discourse.dropout=0",
                               "discourse.epochs=3",
                               "discourse.batch_size=8",
                               "discourse.eval_batch_size=5",
                               "discourse.lr=0.01",
                               "logging.level=warning"};
  all.insert(all.end(), overrides.begin(), overrides.end());
  return load_config({"", "", all});
}

DiscourseTrainResult train_in(const Config& config, MPI_Comm base, int64_t world_n) {
  ProcessGroups groups(Topology(layout_of(config.parallel, world_n)), comm_options(), base);
  DiscourseTrainOptions options;
  return train_discourse(config, groups, options);
}

void expect_same_run(const DiscourseTrainResult& a, const DiscourseTrainResult& b) {
  ASSERT_EQ(a.step_losses.size(), b.step_losses.size());
  for (size_t i = 0; i < a.step_losses.size(); ++i) {
    EXPECT_NEAR(a.step_losses[i], b.step_losses[i], 1e-5 * std::max(1.0, std::abs(a.step_losses[i]))) << "step " << i;
  }
  ASSERT_EQ(a.final_params.size(), b.final_params.size());
  for (size_t i = 0; i < a.final_params.size(); ++i) {
    EXPECT_TRUE(close(a.final_params[i], b.final_params[i], 1e-5, 1e-5)) << "parameter " << i;
  }
  EXPECT_EQ(a.best_epoch, b.best_epoch);
  EXPECT_NEAR(a.test.accuracy, b.test.accuracy, 1e-12);
}

// The frozen encoder's word vectors (multigrained) and pooled pairs (baseline) in tp x dp layouts.
TEST(DiscourseTrain, EncoderFeaturesEqualAcrossLayouts) {
  write_fixtures();
  if (world_size() == 1) GTEST_SKIP() << "layouts need ranks";
  for (const char* model : {"discourse.model=multigrained", "discourse.model=baseline"}) {
    const Config one_config = discourse_config({model});
    const std::vector<DiscourseInstance> test = read_discourse_split(one_config.discourse, "test", false);
    ProcessGroups one_groups(Topology(layout_of(one_config.parallel, 1)), comm_options(), MPI_COMM_SELF);
    const EncodedSet one = DiscourseClassifier(one_config, test, one_groups, torch::kCPU).encode(test);
    const Config tp2 = discourse_config({model, "parallel.tp=2"});
    ProcessGroups groups(Topology(layout_of(tp2.parallel, world_size())), comm_options());
    const EncodedSet split = DiscourseClassifier(tp2, test, groups, torch::kCPU).encode(test);
    if (one.pair.defined()) {
      EXPECT_TRUE(close(split.pair, one.pair, 1e-5, 1e-6)) << model;
    } else {
      EXPECT_TRUE(close(split.context1, one.context1, 1e-5, 1e-6)) << model;
      EXPECT_TRUE(close(split.context2, one.context2, 1e-5, 1e-6)) << model;
    }
  }
}

TEST(DiscourseTrain, LayoutsEqualOneProcess) {
  write_fixtures();
  const std::vector<std::vector<std::string>> models{
      // (Characters are left out: in 48 instances their path's gradients are near zero, and Adam's
      // normalization turns the layouts' summation order into 1e-4 differences of those weights.)
      // (Batches of 9: the last of 48 instances has 3, so at dp 4 a rank trains on none.)
      {"discourse.model=multigrained", "discourse.grains=word context pair", "discourse.memory=true",
       "discourse.batch_size=9"},
      {"discourse.model=baseline", "discourse.connective_weight=0"}};
  for (const auto& model : models) {
    SCOPED_TRACE(model.at(0));
    const DiscourseTrainResult one = train_in(discourse_config(model), MPI_COMM_SELF, 1);
    EXPECT_LT(one.step_losses.back(), one.step_losses.front()) << "training lowers the loss";
    if (world_size() == 1) continue;
    expect_same_run(one, train_in(discourse_config(model), MPI_COMM_WORLD, world_size()));  // dp = world
    std::vector<std::string> tp2 = model;
    tp2.push_back("parallel.tp=2");
    expect_same_run(one, train_in(discourse_config(tp2), MPI_COMM_WORLD, world_size()));  // tp 2 x dp
  }
}

TEST(DiscourseTrain, MemoryLearnsTheCorpusAndSavedClassifierPredictsAlike) {
  write_fixtures();
  const fs::path save = fixture_dir() / "saved";
  const Config config = discourse_config({"discourse.grains=word pair", "discourse.encoder=\"\"",
                                          "discourse.memory=true", "discourse.epochs=12",
                                          "checkpoint.save=" + save.string()});
  ProcessGroups groups(Topology(layout_of(config.parallel, world_size())), comm_options());
  const DiscourseTrainResult result = train_discourse(config, groups, {});
  // The cue word decides the class (chance: 0.25); 48 training instances leave test at 11 of 16.
  EXPECT_GE(result.dev.accuracy, 0.75);
  EXPECT_GE(result.test.accuracy, 0.6);
  for (const DiscourseEpoch& e : result.epochs) {
    if (e.epoch > 1) {
      EXPECT_GT(e.memory_correct, 0.0);
    }
  }
  const auto loaded = DiscourseClassifier::load(save.string(), discourse_saved_config(save.string()), groups, torch::kCPU);
  const std::vector<DiscourseInstance> test = read_discourse_split(config.discourse, "test", false);
  const DiscourseScores again = loaded->score(test, loaded->predict(loaded->encode(test)));
  EXPECT_NEAR(again.accuracy, result.test.accuracy, 1e-12);
  EXPECT_NEAR(again.macro_f1, result.test.macro_f1, 1e-12);
  if (world_size() > 1) {  // the memory was saved over this dp
    ProcessGroups single(Topology(layout_of(config.parallel, 1)), comm_options(), MPI_COMM_SELF);
    EXPECT_THROW(DiscourseClassifier::load(save.string(), config, single, torch::kCPU), CheckpointError);
  }
  // A folder that is not a classifier is never replaced; a classifier folder is, also written "dir/".
  if (world_rank() == 0) fs::create_directories(fixture_dir() / "results" / "keep");
  world().barrier();
  EXPECT_THROW(check_save_folder((fixture_dir() / "results").string()), CheckpointError);
  EXPECT_NO_THROW(check_save_folder(save.string() + "/"));
  EXPECT_THROW(check_save_folder("/nonexistent/folder/classifier"), CheckpointError);
  if (world_size() == 1) {  // one rank: others would wait for the failed one in the save's barrier
    set_fault("eio@remove#1");  // the leftovers of an earlier save will not go (core/fault.h)
    try {
      loaded->save(save.string(), {});
      ADD_FAILURE() << "the save went on";
    } catch (const CheckpointError& e) {
      EXPECT_NE(std::string(e.what()).find(fmt::format(
                    "cannot remove the leftovers of an earlier save '{}.partial': Input/output error", save.string())),
                std::string::npos)
          << e.what();
    }
    set_fault("");
  }
}

// The two instances of a relation with two senses exclude each other's memory slot.
TEST(DiscourseTrain, InstancesOfOneRelationExcludeEachOther) {
  std::vector<EncodedInstance> instances(4);
  for (size_t i = 0; i < instances.size(); ++i) {
    instances[i].id = i == 1 || i == 2 ? "r1" : fmt::format("r{}", i * 10);
    instances[i].arg1.words = instances[i].arg2.words = torch::ones({1}, torch::kLong);
    instances[i].arg1.chars = instances[i].arg2.chars = torch::ones({1, 20}, torch::kLong);
    instances[i].labels = {0};
  }
  const EncodedSet set = pack(instances, torch::kCPU);
  EXPECT_TRUE(torch::equal(collate(set, {0, 1, 2, 3}, true).slots,
                           torch::tensor({0, 0, 1, 2, 1, 2, 3, 3}, torch::kLong).reshape({4, 2})));
  EXPECT_TRUE(torch::equal(collate(set, {2}, false).slots, torch::tensor({{-1, -1}}, torch::kLong)));
}

TEST(DiscourseTrain, ConfigErrorsNameTheirKeys) {
  const auto problem_keys = [](const std::vector<std::string>& overrides) {
    std::vector<std::string> keys;
    try {
      validate_discourse_config(load_config({"", "", overrides}));
    } catch (const ConfigError& e) {
      for (const ConfigProblem& p : e.problems()) keys.push_back(p.field);
    }
    return keys;
  };
  EXPECT_EQ(problem_keys({"discourse.data=x", "discourse.grains=word"}), std::vector<std::string>{});
  EXPECT_EQ(problem_keys({"discourse.data=x", "discourse.grains=word", "discourse.level=3way",
                          "discourse.conv_width=2", "discourse.memory_alpha=2"}),
            (std::vector<std::string>{"discourse.level", "discourse.conv_width", "discourse.memory_alpha"}));
  EXPECT_EQ(problem_keys({"discourse.data=x", "discourse.grains=word", "discourse.model=tree", "discourse.types=\"\"",
                          "discourse.kmax=0", "discourse.highway_layers=-1", "discourse.char_widths=[30]",
                          "discourse.dropout=1", "discourse.connective_weight=-1", "discourse.lr=0",
                          "discourse.clip_grad=-1", "parallel.cp=2"}),
            (std::vector<std::string>{"discourse.model", "discourse.types", "discourse.kmax", "discourse.highway_layers",
                                      "discourse.char_widths", "discourse.dropout", "discourse.connective_weight",
                                      "discourse.lr", "discourse.clip_grad", "parallel.cp"}));
  EXPECT_EQ(problem_keys({"discourse.data=x", "discourse.grains=pair"}), std::vector<std::string>{"discourse.grains"});
  EXPECT_EQ(problem_keys({"discourse.data=x", "discourse.grains=word smell"}),
            std::vector<std::string>{"discourse.grains"});
  EXPECT_EQ(problem_keys({"discourse.data=x", "discourse.model=baseline"}),
            std::vector<std::string>{"discourse.encoder"});
  EXPECT_EQ(problem_keys({"discourse.data=x", "discourse.grains=word", "discourse.model=baseline",
                          "discourse.encoder=e", "discourse.memory=true"}),
            std::vector<std::string>{"discourse.memory"});
}

}  // namespace
}  // namespace foldtron
