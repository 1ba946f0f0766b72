// `foldtron generate`: generation with a Hugging Face model directory in any layout (DESIGN.md's
// contract), alone or under mpirun:
//   foldtron generate --model-dir DIR --input IN.safetensors --output OUT.safetensors
//       [--num-beams N] [--max-new-tokens N] [--length-penalty X] [--early-stopping]
//       [--do-sample --temperature X --top-k N --top-p X --seed N] [parallel flags]
// reads `input_ids` int64 [B, S] (+ `attention_mask`), takes its defaults from the directory's
// generation_config.json, and writes `output_ids` int64 [B, L] as transformers' generate()
// returns them.
#include <memory>
#include <optional>

#include <fmt/format.h>
#include <torch/torch.h>

#include "apps/cli_options.h"
#include "apps/commands.h"
#include "apps/model_dir.h"
#include "checkpoint/safetensors.h"
#include "core/errors.h"
#include "core/log.h"
#include "generation/generate.h"
#include "generation/generation_config.h"
#include "parallel/mpi_runtime.h"
#include "parallel/process_groups.h"

namespace foldtron::cli {
namespace {

struct GenerateFlags {
  ConfigOptions config;
  std::string model_dir, input, output, device = "auto";
  std::optional<int64_t> num_beams, max_new_tokens, top_k;
  std::optional<double> length_penalty, temperature, top_p;
  bool early_stopping = false, do_sample = false;
  uint64_t seed = 0;
};

}  // namespace

Runner register_generate(CLI::App& root) {
  auto flags = std::make_shared<GenerateFlags>();
  CLI::App* app = root.add_subcommand("generate", "generate with a Hugging Face checkpoint in any layout");
  app->add_option("--model-dir", flags->model_dir, "Hugging Face model directory (config.json + *.safetensors)")
      ->required();
  app->add_option("--input", flags->input, "safetensors file with input_ids int64 [batch, length] (+ attention_mask)")
      ->required();
  app->add_option("--output", flags->output, "safetensors file to write: output_ids int64 [batch, length]")->required();
  app->add_option("--num-beams", flags->num_beams, "beam search with this many beams (1: greedy or sampling)")
      ->check(CLI::PositiveNumber);
  app->add_option("--max-new-tokens", flags->max_new_tokens, "tokens to generate at most")->check(CLI::NonNegativeNumber);
  app->add_option("--length-penalty", flags->length_penalty, "beam scores are divided by length ** this");
  app->add_flag("--early-stopping", flags->early_stopping, "beam search ends when num_beams hypotheses are finished");
  app->add_flag("--do-sample", flags->do_sample, "sample instead of searching");
  app->add_option("--temperature", flags->temperature, "sampling temperature")->check(CLI::PositiveNumber);
  app->add_option("--top-k", flags->top_k, "sample among the k most likely tokens (0: all)")->check(CLI::NonNegativeNumber);
  app->add_option("--top-p", flags->top_p, "sample among the most likely tokens holding this probability")
      ->check(CLI::Range(0.0, 1.0));
  app->add_option("--seed", flags->seed, "seed of the sampling");
  flags->config.add_to(*app);
  add_device_option(*app, flags->device);
  app->footer(environment_help());
  return [flags]() {
    MpiRuntime mpi(nullptr, nullptr);
    return run_guarded([&]() -> int {
      if (flags->do_sample && flags->num_beams.value_or(1) > 1) {
        throw UsageError("--do-sample with --num-beams > 1 (beam sampling) is not supported",
                         "sample with --num-beams 1, or search without --do-sample");
      }
      Config config = model_dir_config(flags->config, flags->model_dir);
      const SafetensorsFile file(flags->input);
      const torch::Tensor ids = read_ids(file, "input_ids", true);
      const torch::Tensor mask = read_ids(file, "attention_mask", false);
      check_ids(ids, "input_ids", config.model.vocab_size, flags->input, false);
      if (mask.defined() && mask.sizes() != ids.sizes()) {
        throw DataError(fmt::format("attention_mask in '{}' has shape [{}, {}], but input_ids [{}, {}]", flags->input,
                                    mask.size(0), mask.size(1), ids.size(0), ids.size(1)),
                        "give attention_mask the shape of input_ids");
      }
      LoadedModel loaded = load_model_dir(std::move(config), flags->model_dir, mpi, flags->device, ids.size(1));
      GenerationOptions options = read_generation_config(flags->model_dir);
      // The model section (config.json, --set model.*) where generation_config.json names none.
      if (options.decoder_start_token_id < 0) options.decoder_start_token_id = loaded.config.model.decoder_start_token_id;
      if (options.pad_token_id < 0) options.pad_token_id = loaded.config.model.pad_token_id;
      if (flags->num_beams) options.num_beams = *flags->num_beams;
      if (flags->max_new_tokens) {
        options.max_new_tokens = *flags->max_new_tokens;
        options.max_length = -1;
      }
      if (flags->length_penalty) options.length_penalty = *flags->length_penalty;
      if (flags->early_stopping) options.early_stopping = EarlyStopping::kTrue;
      if (flags->do_sample) options.do_sample = true;
      if (flags->temperature) options.temperature = *flags->temperature;
      if (flags->top_k) options.top_k = *flags->top_k;
      if (flags->top_p) options.top_p = *flags->top_p;
      options.seed = flags->seed;
      if (options.do_sample && options.num_beams > 1) {
        throw UsageError(fmt::format("{}/generation_config.json asks for {} beams, and --do-sample was given",
                                     flags->model_dir, options.num_beams),
                         "pass --num-beams 1 to sample");
      }
      const torch::Tensor out = generate(*loaded.model, *loaded.groups, ids, mask, options);
      if (mpi.rank() == 0) {
        write_safetensors(flags->output, {{"output_ids", out}});
        log::info("generate", "{} sequences; wrote output_ids [{}, {}] to {}", ids.size(0), out.size(0), out.size(1),
                  flags->output);
      }
      return 0;
    });
  };
}

}  // namespace foldtron::cli
