// Checkpoints through the foldtron binary (DESIGN.md's contracts):
//  - HF -> foldtron -> HF is bit-exact for every family in ../shared/reference/hf (names, dtypes,
//    values, config.json, generation_config.json), converting in and exporting under mpirun too,
//    sharded with model.safetensors.index.json; the export runs in `foldtron forward` to the
//    reference logits;
//  - a trained model exports with a config.json made from its config (and back, bit-exact); one
//    its family cannot express is refused naming the key;
//  - one test per user-facing error: truncated, corrupted, foreign and future-version
//    checkpoints, no checkpoint to load (and load_optional), another model, a layout that cannot
//    hold the model (naming both layouts), a removal that fails in a save or an export;
//  - kill -9 at random moments of a run saving every step, 20 times: the last complete checkpoint
//    always loads and verifies.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <random>
#include <set>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "checkpoint/distributed.h"
#include "checkpoint/model_state.h"
#include "checkpoint/safetensors.h"
#include "core/files.h"
#include "run_command.h"

namespace foldtron::testing {
namespace {
namespace fs = std::filesystem;
using nlohmann::json;

const std::string kReference = FOLDTRON_REFERENCE_DIR "/hf";
const std::vector<std::string> kFamilies{"llama-tiny", "mixtral-tiny", "qwen2moe-tiny", "qwen3moe-tiny", "marian-tiny"};

// A new empty folder for one test.
std::string temp_dir(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / fmt::format("foldtron_checkpoint_cli_{}", getpid()) / name;
  remove_tree(dir);
  fs::create_directories(dir.parent_path());
  return dir.string();
}

std::string foldtron(const std::string& args, int* code, const std::string& launcher = "") {
  return run_command(fmt::format("{}{} {} 2>&1", launcher, FOLDTRON_BINARY, args), code);
}

// Trains a 2-layer `preset` model for `iters` steps and saves it into `dir` (`more`: further flags).
void train_and_save(const std::string& preset, const std::string& dir, int iters, const std::string& more = "") {
  int code = -1;
  const std::string log = foldtron(fmt::format("train --preset {} --train-iters {} --global-batch-size 4 --seq-length 32 "
                                               "--set model.num_layers=2 --save {} --log-level warning {}",
                                               preset, iters, dir, more),
                                   &code);
  ASSERT_EQ(code, 0) << log;
}

json read_json(const std::string& path) {
  std::ifstream in(path);
  return json::parse(in);
}

// The two Hugging Face directories hold the same tensors, bit for bit, and the same JSON files.
void expect_same_hf(const std::string& want_dir, const std::string& got_dir) {
  const HfCheckpoint want(want_dir), got(got_dir);
  ASSERT_EQ(want.names(), got.names());
  for (const std::string& name : want.names()) {
    EXPECT_EQ(want.dtype(name), got.dtype(name)) << name;
    const torch::Tensor a = want.load(name), b = got.load(name);
    EXPECT_TRUE(a.sizes() == b.sizes() && torch::equal(a, b)) << name;
  }
  EXPECT_EQ(read_json(want_dir + "/config.json"), read_json(got_dir + "/config.json"));
  if (fs::exists(want_dir + "/generation_config.json")) {
    EXPECT_EQ(read_json(want_dir + "/generation_config.json"), read_json(got_dir + "/generation_config.json"));
  }
}

TEST(ConvertCli, HuggingFaceRoundTripsAreBitExact) {
  for (const std::string& family : kFamilies) {
    SCOPED_TRACE(family);
    const std::string source = kReference + "/" + family;
    if (!fs::exists(source)) GTEST_SKIP() << "no reference model at " << source;
    const std::string dir = temp_dir("round_" + family);
    int code = -1;
    std::string log = foldtron(fmt::format("convert --from hf --to foldtron --input {} --output {}/ft", source, dir), &code);
    ASSERT_EQ(code, 0) << log;
    EXPECT_TRUE(fs::exists(dir + "/ft/iter_0000000/metadata.json")) << log;
    log = foldtron(fmt::format("convert --from foldtron --to hf --input {}/ft --output {}/hf", dir, dir), &code);
    ASSERT_EQ(code, 0) << log;
    EXPECT_TRUE(fs::exists(dir + "/hf/model.safetensors")) << "one file below the shard size";
    expect_same_hf(source, dir + "/hf");
  }
}

// Converted in under a folded layout (each rank writes its tp/ep shards), exported by two ranks
// into 4 KB shards: the same tensors, an index naming every one.
TEST(ConvertCli, ParallelConversionAndShardedExport) {
  const std::string source = kReference + "/mixtral-tiny";
  if (!fs::exists(source)) GTEST_SKIP() << "no reference model at " << source;
  const std::string dir = temp_dir("parallel");
  int code = -1;
  std::string log = foldtron(
      fmt::format("convert --from hf --to foldtron --input {} --output {}/ft --tp 2 --ep 2 --etp 1", source, dir),
      &code, kMpirun + "-np 4 ");
  ASSERT_EQ(code, 0) << log;
  const CheckpointReader reader(dir + "/ft/iter_0000000");
  // Every rank wrote its file (and further ones for its writer threads' shares).
  for (int rank = 0; rank < 4; ++rank) {
    EXPECT_TRUE(fs::exists(fmt::format("{}/ft/iter_0000000/rank_{:05d}.safetensors", dir, rank))) << rank;
  }
  EXPECT_GT(reader.num_files(), 4);
  // One writer thread: one file per rank.
  log = foldtron(fmt::format("convert --from hf --to foldtron --input {} --output {}/ft1 --tp 2 --ep 2 --etp 1 --set "
                             "checkpoint.writer_threads=1",
                             source, dir),
                 &code, kMpirun + "-np 4 ");
  ASSERT_EQ(code, 0) << log;
  EXPECT_EQ(CheckpointReader(dir + "/ft1/iter_0000000").num_files(), 4);
  EXPECT_EQ(reader.state().at("layout").at("tp"), 2);
  log = foldtron(fmt::format("convert --from foldtron --to hf --input {}/ft --output {}/hf --max-shard-size 40KB", dir,
                             dir),
                 &code, kMpirun + "-np 2 ");
  ASSERT_EQ(code, 0) << log;
  const json index = read_json(dir + "/hf/model.safetensors.index.json");
  std::map<std::string, int> tensors_in;
  for (const auto& [name, file] : index.at("weight_map").items()) ++tensors_in[file.get<std::string>()];
  EXPECT_GT(tensors_in.size(), 2u);
  for (const auto& [file, count] : tensors_in) {
    ASSERT_TRUE(fs::exists(dir + "/hf/" + file)) << file;
    // A shard holds up to 40 KB of tensors (plus its header), or one larger tensor alone.
    if (count > 1) {
      EXPECT_LE(fs::file_size(dir + "/hf/" + file), 40000u + 8192u) << file;
    }
  }
  expect_same_hf(source, dir + "/hf");
}

// The exported directory runs in foldtron forward to the reference's logits.
TEST(ConvertCli, ExportedModelsGiveTheReferenceLogits) {
  for (const std::string& family : {std::string("mixtral-tiny"), std::string("marian-tiny")}) {
    SCOPED_TRACE(family);
    const std::string source = kReference + "/" + family;
    if (!fs::exists(source)) GTEST_SKIP() << "no reference model at " << source;
    const std::string dir = temp_dir("logits_" + family);
    int code = -1;
    std::string log = foldtron(fmt::format("convert --from hf --to foldtron --input {} --output {}/ft --tp 2", source,
                                           dir),
                               &code, kMpirun + "-np 2 ");
    ASSERT_EQ(code, 0) << log;
    log = foldtron(fmt::format("convert --from foldtron --to hf --input {}/ft --output {}/hf", dir, dir), &code);
    ASSERT_EQ(code, 0) << log;
    log = foldtron(fmt::format("forward --device cpu --model-dir {}/hf --input {}/reference.safetensors --output "
                               "{}/out.safetensors",
                               dir, source, dir),
                   &code);
    ASSERT_EQ(code, 0) << log;
    const torch::Tensor want = SafetensorsFile(source + "/reference.safetensors").load("logits");
    const torch::Tensor got = SafetensorsFile(dir + "/out.safetensors").load("logits");
    ASSERT_EQ(got.sizes(), want.sizes());
    EXPECT_TRUE(torch::allclose(got, want, 1e-5, 1e-5 * want.abs().max().item<double>()));
  }
}

// A model trained from scratch: exported with a config.json made from its config, which
// hf_model_config reads back; converting that back in gives the checkpoint's weights exactly.
TEST(ConvertCli, TrainedModelsExportAndComeBackExactly) {
  const std::string dir = temp_dir("trained");
  train_and_save("tiny-moe", dir + "/save", 2);
  int code = -1;
  std::string log = foldtron(fmt::format("convert --from foldtron --to hf --input {}/save --output {}/hf", dir, dir), &code);
  ASSERT_EQ(code, 0) << log;
  const json config = read_json(dir + "/hf/config.json");
  EXPECT_EQ(config.at("model_type"), "mixtral");
  EXPECT_EQ(config.at("num_local_experts"), 8);
  EXPECT_EQ(config.at("intermediate_size"), 64) << "Mixtral's experts are intermediate_size wide";
  log = foldtron(fmt::format("convert --from hf --to foldtron --input {}/hf --output {}/back", dir, dir), &code);
  ASSERT_EQ(code, 0) << log;
  const CheckpointReader trained(resolve_checkpoint(dir + "/save")), back(resolve_checkpoint(dir + "/back"));
  int64_t compared = 0;
  for (const std::string& name : trained.tensors()) {
    if (name.rfind("model/", 0) != 0) continue;
    ASSERT_TRUE(back.has(name)) << name;
    EXPECT_TRUE(torch::equal(trained.read_full(name), back.read_full(name))) << name;
    ++compared;
  }
  EXPECT_GT(compared, 10);
  write_safetensors(dir + "/ids.safetensors", {{"input_ids", torch::randint(0, 256, {2, 16}, torch::kLong)}});
  log = foldtron(fmt::format("forward --device cpu --model-dir {}/hf --input {}/ids.safetensors --output "
                             "{}/out.safetensors",
                             dir, dir, dir),
                 &code);
  EXPECT_EQ(code, 0) << "the export runs:\n" << log;
}

TEST(ConvertCli, ModelsTheFamilyCannotExpressAreRefused) {
  const std::string dir = temp_dir("inexpressible");
  train_and_save("tiny-moe", dir + "/save", 1, "--set moe.router_score=sigmoid");
  int code = -1;
  std::string log = foldtron(fmt::format("convert --from foldtron --to hf --input {}/save --output {}/hf", dir, dir), &code);
  EXPECT_EQ(code, 2) << log;
  EXPECT_NE(log.find("cannot be written as a Hugging Face mixtral model"), std::string::npos) << log;
  EXPECT_NE(log.find("moe.router_score sigmoid (the checkpoint) vs softmax (Hugging Face)"), std::string::npos) << log;
  EXPECT_FALSE(fs::exists(dir + "/hf")) << "nothing is written";
  log = foldtron(fmt::format("convert --from foldtron --to foldtron --input {}/save --output {}/x", dir, dir), &code);
  EXPECT_EQ(code, 2) << log;
  EXPECT_NE(log.find("--from and --to are both 'foldtron'"), std::string::npos) << log;
}

// A saved tiny-dense checkpoint for the error tests.
std::string saved_checkpoint(const std::string& dir) {
  train_and_save("tiny-dense", dir, 1);
  return dir + "/iter_0000001";
}

std::string resume(const std::string& dir, const std::string& more, int* code) {
  return foldtron(fmt::format("train --preset tiny-dense --train-iters 2 --global-batch-size 4 --seq-length 32 --set "
                              "model.num_layers=2 --load {} {}",
                              dir, more),
                  code);
}

TEST(CheckpointErrors, DamagedFilesAreNamed) {
  const std::string dir = temp_dir("damaged");
  const std::string checkpoint = saved_checkpoint(dir);
  const std::string file = checkpoint + "/rank_00000.safetensors";
  const auto size = fs::file_size(file);
  int code = -1;
  {  // one flipped byte in the data
    std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(static_cast<std::streamoff>(size - 100));
    char c = 0;
    f.read(&c, 1);
    f.seekp(static_cast<std::streamoff>(size - 100));
    c = static_cast<char>(c ^ 0x40);
    f.write(&c, 1);
  }
  std::string log = resume(dir, "", &code);
  EXPECT_EQ(code, 2) << log;
  EXPECT_NE(log.find("checkpoint error"), std::string::npos) << log;
  EXPECT_NE(log.find("its file 'rank_00000.safetensors' does not match its checksum"), std::string::npos) << log;
  EXPECT_EQ(log.find("step 2/2"), std::string::npos) << "nothing is trained on:\n" << log;
  fs::resize_file(file, size - 1000);
  log = resume(dir, "", &code);
  EXPECT_EQ(code, 2) << log;
  EXPECT_NE(log.find(fmt::format("its file 'rank_00000.safetensors' has {} bytes, but metadata.json recorded {} "
                                 "(truncated?)",
                                 size - 1000, size)),
            std::string::npos)
      << log;
  fs::remove(file);
  log = resume(dir, "", &code);
  EXPECT_EQ(code, 2) << log;
  EXPECT_NE(log.find("its file 'rank_00000.safetensors' is missing"), std::string::npos) << log;
}

TEST(CheckpointErrors, ForeignAndFutureCheckpointsAreRefused) {
  const std::string dir = temp_dir("foreign");
  const std::string checkpoint = saved_checkpoint(dir);
  const std::string metadata = checkpoint + "/metadata.json";
  json m = read_json(metadata);
  m["version"] = 99;
  std::ofstream(metadata) << m.dump();
  int code = -1;
  std::string log = resume(dir, "", &code);
  EXPECT_EQ(code, 2) << log;
  EXPECT_NE(log.find("has format version 99; this build reads versions 1 to 1"), std::string::npos) << log;
  m["format"] = "something-else";
  std::ofstream(metadata) << m.dump();
  log = resume(dir, "", &code);
  EXPECT_EQ(code, 2) << log;
  EXPECT_NE(log.find("is not a foldtron checkpoint"), std::string::npos) << log;
  std::ofstream(metadata) << "{ not json";
  log = resume(dir, "", &code);
  EXPECT_EQ(code, 2) << log;
  EXPECT_NE(log.find("metadata.json is not valid JSON"), std::string::npos) << log;
  // A Hugging Face directory (its config.json tells) is not a foldtron checkpoint: convert it first.
  const std::string hf = temp_dir("hf_dir");
  fs::create_directories(hf);
  std::ofstream(hf + "/config.json") << R"({"model_type": "llama"})";
  log = resume(hf, "", &code);
  EXPECT_EQ(code, 2) << log;
  EXPECT_NE(log.find("it looks like a Hugging Face model directory"), std::string::npos) << log;
  EXPECT_NE(log.find("foldtron convert --from hf --to foldtron"), std::string::npos) << log;
}

// A removal that fails (FOLDTRON_FAULT=eio@remove#N: the N-th remove_tree of the process fails
// with an I/O error; core/fault.h): a save's leftovers stop the save and name the folder, a
// checkpoint beyond keep_last that will not go is a warning, an export names what it could not
// remove and where the complete export is.
TEST(CheckpointErrors, FailedRemovalsAreNamed) {
  const std::string dir = temp_dir("removal"), hf = dir + "_hf";
  const std::string train = fmt::format("train --preset tiny-moe --train-iters 3 --global-batch-size 4 --seq-length 32 "
                                        "--set model.num_layers=2 --save {} --set checkpoint.save_interval=1 --set "
                                        "checkpoint.keep_last=1",
                                        dir);
  const std::string convert = fmt::format("convert --from foldtron --to hf --input {} --output {}", dir, hf);
  // foldtron with FOLDTRON_FAULT=`fault`: exits `want`, saying `message`.
  const auto run = [](const std::string& args, const std::string& fault, int want, const std::string& message) {
    int code = -1;
    const std::string log = foldtron(args, &code, "FOLDTRON_FAULT=" + fault + " ");
    EXPECT_EQ(code, want) << log;
    EXPECT_NE(log.find(message), std::string::npos) << message << "\n" << log;
    return log;
  };
  // Each save first removes its own leftovers (#1 in step 1's save, #2 in step 2's), then the
  // checkpoints beyond keep_last (#3: step 1's, in step 2's save).
  std::string log = run(train, "eio@remove#3", 0,
                        fmt::format("could not remove the old checkpoint '{}/iter_0000001' (keep_last 1): Input/output "
                                    "error",
                                    dir));
  EXPECT_TRUE(fs::exists(dir + "/iter_0000003/metadata.json")) << log;
  EXPECT_FALSE(fs::exists(dir + "/iter_0000001")) << "step 3's save removes what step 2's left\n" << log;

  remove_tree(hf);
  run(convert, "eio@remove#1", 2,
      fmt::format("cannot remove the leftovers of an earlier export '{}.tmp': Input/output error", hf));
  log = run(convert, "eio@remove#2", 2,
            fmt::format("cannot remove the empty folder '{}' to put the export there: Input/output error", hf));
  EXPECT_NE(log.find(fmt::format("the export is complete in '{}.tmp'", hf)), std::string::npos) << log;
  EXPECT_TRUE(fs::exists(hf + ".tmp/config.json")) << log;

  remove_tree(dir);
  log = run(train, "eio@remove#2", 2,
            fmt::format("cannot remove the leftovers of an earlier save '{}/iter_0000002.tmp': Input/output error", dir));
  std::ifstream latest(dir + "/latest");
  std::string last;
  std::getline(latest, last);
  EXPECT_EQ(last, "iter_0000001") << "the last complete checkpoint stays\n" << log;
  remove_tree(hf + ".tmp");
}

TEST(CheckpointErrors, NothingToLoadIsAnErrorUnlessOptional) {
  const std::string dir = temp_dir("empty");
  fs::create_directories(dir);
  int code = -1;
  std::string log = resume(dir, "", &code);
  EXPECT_EQ(code, 2) << log;
  EXPECT_NE(log.find(fmt::format("'{}' holds no checkpoint (no metadata.json, no 'latest')", dir)), std::string::npos)
      << log;
  EXPECT_NE(log.find("checkpoint.load_optional"), std::string::npos) << log;
  log = resume(dir, "--set checkpoint.load_optional=true --save " + dir, &code);
  EXPECT_EQ(code, 0) << log;
  EXPECT_NE(log.find("starting fresh"), std::string::npos) << log;
  EXPECT_TRUE(fs::exists(dir + "/iter_0000002/metadata.json")) << log;
}

TEST(CheckpointErrors, AnotherModelOrAnImpossibleLayoutIsRefused) {
  const std::string dir = temp_dir("other");
  saved_checkpoint(dir);
  int code = -1;
  std::string log = resume(dir, "--set model.hidden_size=128", &code);
  EXPECT_EQ(code, 2) << log;
  EXPECT_NE(log.find("holds another model"), std::string::npos) << log;
  EXPECT_NE(log.find("model.hidden_size 64 (saved) vs 128 (now)"), std::string::npos) << log;
  // 4 KV heads do not split over tp 8 (a layout that cannot hold the model): both layouts named.
  log = foldtron(fmt::format("train --preset tiny-dense --train-iters 2 --global-batch-size 8 --seq-length 32 --set "
                             "model.num_layers=2 --load {} --tp 8",
                             dir),
                 &code, kMpirun + "-np 8 ");
  EXPECT_EQ(code, 2) << log;
  EXPECT_NE(log.find("was saved under world 1 (tp 1 cp 1 pp 1 vpp 1 ep 1 etp 1); it loads into any layout that holds "
                     "the model, but not into world 8 (tp 8"),
            std::string::npos)
      << log;
}

// kill -9 at random moments of a run that saves every step (resuming each time from what the
// last one left): afterwards the last complete checkpoint always loads and verifies, and a run
// killed mid-save leaves at most a .tmp folder beside it.
TEST(CheckpointCrash, KilledSavesNeverBreakTheLastCheckpoint) {
  const std::string dir = temp_dir("crash");
  std::mt19937 random(1234);
  std::uniform_real_distribution<double> delay(1.0, 4.0);
  int complete = 0, interrupted = 0;
  for (int i = 0; i < 20; ++i) {
    int code = -1;
    const std::string log = run_command(
        fmt::format("timeout -s KILL {:.2f} {} train --preset tiny-dense --train-iters 100000 --global-batch-size 2 "
                    "--seq-length 32 --set model.num_layers=2 --save {} --save-interval 1 --load {} --set "
                    "checkpoint.load_optional=true --set checkpoint.keep_last=2 --log-level warning 2>&1",
                    delay(random), FOLDTRON_BINARY, dir, dir),
        &code);
    EXPECT_EQ(code, 137) << "the run should have been killed:\n" << log;
    const std::string latest = resolve_checkpoint(dir);
    if (latest.empty()) continue;  // killed before its first save
    ++complete;
    for (const auto& entry : fs::directory_iterator(dir)) {
      interrupted += entry.path().extension() == ".tmp" ? 1 : 0;
    }
    try {
      const CheckpointReader reader(latest);
      reader.verify_all();
      for (const std::string& name : reader.tensors()) reader.read_full(name);
    } catch (const std::exception& e) {
      ADD_FAILURE() << "after kill " << i + 1 << ", " << latest << " does not load: " << e.what();
    }
  }
  EXPECT_GE(complete, 15) << "most runs should have saved before they were killed";
  std::cout << complete << " kills after a complete save, " << interrupted << " of them during a save\n";
}

}  // namespace
}  // namespace foldtron::testing
