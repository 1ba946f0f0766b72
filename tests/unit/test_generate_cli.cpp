// `foldtron generate` end to end (DESIGN.md's contract): the binary, alone and under mpirun with
// tensor, data and pipeline parallelism, reproduces transformers' greedy and 4-beam outputs of
// ../shared/reference/hf/marian-tiny exactly, taking bad words, forced end-of-sequence and the
// start token from its generation_config.json.

#include <filesystem>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "checkpoint/safetensors.h"
#include "run_command.h"
#include "scratch_files.h"

namespace foldtron::testing {
namespace {

const std::string kMarianTiny = FOLDTRON_REFERENCE_DIR "/hf/marian-tiny";

TEST(GenerateCli, GreedyAndBeamSearchMatchTransformers) {
  if (!std::filesystem::exists(kMarianTiny)) GTEST_SKIP() << "no reference model at " << kMarianTiny;
  const SafetensorsFile reference(kMarianTiny + "/reference.safetensors");
  const std::string input = scratch_path("generate", "input.safetensors");
  write_safetensors(input, {{"input_ids", reference.load("input_ids")}, {"attention_mask", reference.load("attention_mask")}});
  for (const auto& [launcher, layout] : std::vector<std::pair<std::string, std::string>>{
           {"", ""}, {kMpirun + "-np 4 ", "--tp 2"}, {kMpirun + "-np 2 ", "--pp 2"}}) {
    for (const auto& [search, expected] : std::vector<std::pair<std::string, std::string>>{
             {"", "greedy_ids"}, {"--num-beams 4 --length-penalty 1.0 --early-stopping", "beam4_ids"}}) {
      SCOPED_TRACE(launcher + layout + " " + search);
      const std::string output = scratch_path("generate", "output.safetensors");
      int code = -1;
      const std::string log = run_command(
          fmt::format("{}{} generate --device cpu --model-dir {} --input {} --output {} --max-new-tokens 12 {} {} 2>&1",
                      launcher, FOLDTRON_BINARY, kMarianTiny, input, output, search, layout),
          &code);
      ASSERT_EQ(code, 0) << log;
      const torch::Tensor got = SafetensorsFile(output).load("output_ids");
      const torch::Tensor want = reference.load(expected);
      EXPECT_TRUE(torch::equal(got, want)) << got << "\nwanted\n" << want;
    }
  }
}

TEST(GenerateCli, InputErrorsNameTheProblem) {
  if (!std::filesystem::exists(kMarianTiny)) GTEST_SKIP() << "no reference model at " << kMarianTiny;
  const std::vector<std::pair<std::vector<std::pair<std::string, torch::Tensor>>, std::string>> cases{
      {{{"ids", torch::ones({1, 3}, torch::kLong)}}, "has no tensor 'input_ids'"},
      {{{"input_ids", torch::full({1, 3}, 500, torch::kLong)}}, "outside the vocabulary [0, 320)"},
      {{{"input_ids", torch::ones({1, 3}, torch::kLong)}, {"attention_mask", torch::ones({1, 2}, torch::kLong)}},
       "attention_mask in"},
  };
  for (const auto& [tensors, expect] : cases) {
    SCOPED_TRACE(expect);
    const std::string input = scratch_path("generate", "bad.safetensors");
    write_safetensors(input, tensors);
    int code = -1;
    const std::string unused = scratch_path("generate", "unused.safetensors");
    const std::string log = run_command(fmt::format("{} generate --device cpu --model-dir {} --input {} --output {} 2>&1",
                                                    FOLDTRON_BINARY, kMarianTiny, input, unused),
                                        &code);
    EXPECT_EQ(code, 2) << log;
    EXPECT_NE(log.find("data error"), std::string::npos) << log;
    EXPECT_NE(log.find(expect), std::string::npos) << log;
    EXPECT_NE(log.find("hint:"), std::string::npos) << log;
  }
}

}  // namespace
}  // namespace foldtron::testing
