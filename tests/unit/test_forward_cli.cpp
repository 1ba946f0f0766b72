// `foldtron forward` end to end (DESIGN.md's contract): the binary, alone and under mpirun with a
// folded layout, reads a Hugging Face directory and input_ids and writes logits and loss that
// match transformers' (../shared/reference/hf); and one test per input error it reports.

#include <filesystem>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "checkpoint/safetensors.h"
#include "run_command.h"
#include "scratch_files.h"

namespace foldtron::testing {
namespace {

const std::string kMixtralTiny = FOLDTRON_REFERENCE_DIR "/hf/mixtral-tiny";

std::string forward(const std::string& launcher, const std::string& input, const std::string& output,
                    const std::string& flags, int* exit_code, const std::string& model = kMixtralTiny) {
  return run_command(fmt::format("{}{} forward --device cpu --model-dir {} --input {} --output {} {} 2>&1", launcher,
                                 FOLDTRON_BINARY, model, input, output, flags),
                     exit_code);
}

// The encoder-decoder contract: attention_mask, decoder_input_ids and labels in; the decoder's
// logits and the mean loss over the labels that are not -100 out, alone and under tp 2 with
// sequence parallelism x dp 2.
TEST(ForwardCli, EncoderDecoderMatchesTransformers) {
  const std::string model = FOLDTRON_REFERENCE_DIR "/hf/marian-tiny";
  if (!std::filesystem::exists(model)) GTEST_SKIP() << "no reference model at " << model;
  const SafetensorsFile reference(model + "/reference.safetensors");
  const torch::Tensor logits = reference.load("logits");
  const double loss = reference.load("loss").item<double>();
  for (const auto& [launcher, flags] :
       std::vector<std::pair<std::string, std::string>>{{"", ""}, {kMpirun + "-np 4 ", "--tp 2 --sequence-parallel"}}) {
    SCOPED_TRACE(launcher + flags);
    const std::string out = scratch_path("forward", "marian.safetensors");
    int code = -1;
    const std::string log = forward(launcher, model + "/reference.safetensors", out, flags, &code, model);
    ASSERT_EQ(code, 0) << log;
    const SafetensorsFile result(out);
    ASSERT_EQ(result.load("logits").sizes(), logits.sizes());
    EXPECT_TRUE(torch::allclose(result.load("logits"), logits, 1e-5, 1e-5 * logits.abs().max().item<double>()));
    EXPECT_NEAR(result.load("loss").item<double>(), loss, 1e-5 * loss);
  }
}

TEST(ForwardCli, EncoderDecoderInputErrorsNameTheProblem) {
  const std::string model = FOLDTRON_REFERENCE_DIR "/hf/marian-tiny";
  if (!std::filesystem::exists(model)) GTEST_SKIP() << "no reference model at " << model;
  const torch::Tensor ids = torch::ones({2, 6}, torch::kLong);
  const std::vector<std::pair<std::vector<std::pair<std::string, torch::Tensor>>, std::string>> cases{
      {{{"input_ids", ids}}, "an encoder-decoder model needs decoder_input_ids and labels beside input_ids"},
      {{{"input_ids", ids}, {"decoder_input_ids", torch::ones({2, 4}, torch::kLong)},
        {"labels", torch::ones({2, 5}, torch::kLong)}},
       "decoder_input_ids [2, 4] and labels [2, 5] must both be [batch 2, target length]"},
      {{{"input_ids", ids}, {"attention_mask", torch::ones({2, 5}, torch::kLong)},
        {"decoder_input_ids", torch::ones({2, 4}, torch::kLong)}, {"labels", torch::ones({2, 4}, torch::kLong)}},
       "attention_mask has shape [2, 5], but input_ids [2, 6]"},
      {{{"input_ids", ids}, {"decoder_input_ids", torch::ones({2, 4}, torch::kLong)},
        {"labels", torch::full({2, 4}, 400, torch::kLong)}},
       "'labels' in"},
  };
  for (const auto& [tensors, expect] : cases) {
    SCOPED_TRACE(expect);
    const std::string input = scratch_path("forward", "bad_marian.safetensors");
    write_safetensors(input, tensors);
    int code = -1;
    const std::string log = forward("", input, scratch_path("forward", "unused.safetensors"), "", &code, model);
    EXPECT_EQ(code, 2) << log;
    EXPECT_NE(log.find("data error"), std::string::npos) << log;
    EXPECT_NE(log.find(expect), std::string::npos) << log;
    EXPECT_NE(log.find("hint:"), std::string::npos) << log;
  }
}

TEST(ForwardCli, AloneAndFoldedUnderMpirunMatchTransformers) {
  if (!std::filesystem::exists(kMixtralTiny)) GTEST_SKIP() << "no reference model at " << kMixtralTiny;
  const SafetensorsFile reference(kMixtralTiny + "/reference.safetensors");
  const torch::Tensor logits = reference.load("logits");
  const double loss = reference.load("ce_loss").item<double>();
  for (const auto& [launcher, flags] : std::vector<std::pair<std::string, std::string>>{
           {"", ""}, {kMpirun + "-np 4 ", "--tp 2 --ep 4 --etp 1 --sequence-parallel"},
           {kMpirun + "-np 4 ", "--tp 2 --cp 2 --ep 2 --etp 1 --sequence-parallel"},
           // Every attention dimension at once: tensor, context and pipeline parallelism.
           {kMpirun + "-np 8 ", "--tp 2 --cp 2 --pp 2 --ep 2 --etp 1 --sequence-parallel"}}) {
    for (const bool with_mask : {false, true}) {
    // An all-ones attention_mask is no padding: the same result, context parallelism included.
    SCOPED_TRACE(with_mask ? "with an all-ones attention_mask" : "input_ids alone");
    const std::string input = scratch_path("forward", "in.safetensors");
    std::vector<std::pair<std::string, torch::Tensor>> tensors{{"input_ids", reference.load("input_ids")}};
    if (with_mask) tensors.emplace_back("attention_mask", torch::ones_like(reference.load("input_ids")));
    write_safetensors(input, tensors);
    SCOPED_TRACE(launcher + flags);
    const std::string out = scratch_path("forward", "out.safetensors");
    int code = -1;
    const std::string log = forward(launcher, input, out, flags, &code);
    ASSERT_EQ(code, 0) << log;
    const SafetensorsFile result(out);
    const torch::Tensor got = result.load("logits");
    ASSERT_EQ(got.sizes(), logits.sizes());
    EXPECT_TRUE(torch::allclose(got, logits, 1e-5, 1e-5 * logits.abs().max().item<double>()));
    EXPECT_NEAR(result.load("loss").item<double>(), loss, 1e-5 * loss);
    EXPECT_EQ(result.load("loss").sizes(), (std::vector<int64_t>{1}));
    }
  }
}

TEST(ForwardCli, InputErrorsNameTheProblem) {
  if (!std::filesystem::exists(kMixtralTiny)) GTEST_SKIP() << "no reference model at " << kMixtralTiny;
  struct Case {
    std::string name;
    torch::Tensor tensor;
    std::string expect;
    std::string launcher = "", flags = "";
    std::string kind = "data error";
  };
  const std::vector<Case> cases{
      {"ids", torch::zeros({2, 8}, torch::kLong), "has no tensor 'input_ids'"},
      {"input_ids", torch::zeros({2, 8}, torch::kFloat), "must be int64 [batch >= 1, length >= 1], got F32 [2, 8]"},
      {"input_ids", torch::full({1, 8}, 999, torch::kLong), "outside the vocabulary [0, 320)"},
      // The input's length becomes train.seq_length, which validation checks against the layout.
      {"input_ids", torch::zeros({2, 6}, torch::kLong), "train.seq_length (6) must be divisible by 2*parallel.cp (4)",
       kMpirun + "-np 2 ", "--cp 2", "config error"},
      // Two layers do not split into pp 2 x vpp 2 chunks.
      {"input_ids", torch::zeros({2, 8}, torch::kLong), "num_layers (2) must be divisible by pp*vpp = 4",
       kMpirun + "-np 2 ", "--pp 2 --vpp 2", "config error"},
  };
  for (const Case& c : cases) {
    const std::string input = scratch_path("forward", "bad_input.safetensors");
    write_safetensors(input, {{c.name, c.tensor}});
    SCOPED_TRACE(c.expect);
    int code = -1;
    const std::string log = forward(c.launcher, input, scratch_path("forward", "unused.safetensors"), c.flags, &code);
    EXPECT_EQ(code, 2) << log;
    EXPECT_NE(log.find(c.kind), std::string::npos) << log;
    EXPECT_NE(log.find(c.expect), std::string::npos) << log;
    EXPECT_NE(log.find("hint:"), std::string::npos) << log;
  }
}

}  // namespace
}  // namespace foldtron::testing
