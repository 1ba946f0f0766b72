// `foldtron forward`: run a Hugging Face checkpoint directory on a batch in any layout (DESIGN.md's
// contract), alone or under mpirun:
//   foldtron forward --model-dir DIR --input IN.safetensors --output OUT.safetensors [--tp 2 --ep 4 ...]
// reads `input_ids` (int64 [B, S]) and, when present, `attention_mask` (and for an encoder-decoder
// `decoder_input_ids` and `labels` [B, T]); writes `logits` (fp32 [B, S or T, V]) and `loss` (fp32
// [1]). DP may exceed B: ranks without a sequence still take part.
#include <memory>

#include <fmt/format.h>
#include <torch/torch.h>

#include "apps/cli_options.h"
#include "apps/commands.h"
#include "apps/model_dir.h"
#include "checkpoint/safetensors.h"
#include "core/log.h"
#include "parallel/mpi_runtime.h"
#include "parallel/process_groups.h"
#include "training/forward.h"

namespace foldtron::cli {
namespace {

struct ForwardFlags {
  ConfigOptions config;
  std::string model_dir, input, output, device = "auto";
};

}  // namespace

Runner register_forward(CLI::App& root) {
  auto flags = std::make_shared<ForwardFlags>();
  CLI::App* app = root.add_subcommand(
      "forward", "run a Hugging Face checkpoint on input_ids in any layout; writes logits and loss");
  app->add_option("--model-dir", flags->model_dir, "Hugging Face model directory (config.json + *.safetensors)")
      ->required();
  app->add_option("--input", flags->input,
                  "safetensors file with input_ids int64 [batch, sequence] (+ attention_mask; encoder-decoder: "
                  "decoder_input_ids and labels [batch, target]; with language embeddings: languages, "
                  "decoder_languages [batch])")
      ->required();
  app->add_option("--output", flags->output, "safetensors file to write: logits fp32 [B, S, V], loss fp32 [1]")
      ->required();
  flags->config.add_to(*app);
  add_device_option(*app, flags->device);
  app->footer(environment_help());
  return [flags]() {
    MpiRuntime mpi(nullptr, nullptr);
    return run_guarded([&]() -> int {
      Config config = model_dir_config(flags->config, flags->model_dir);
      const SafetensorsFile file(flags->input);
      ForwardInputs inputs;
      inputs.input_ids = read_ids(file, "input_ids", true);
      inputs.attention_mask = read_ids(file, "attention_mask", false);
      inputs.decoder_input_ids = read_ids(file, "decoder_input_ids", false);
      inputs.labels = read_ids(file, "labels", false);
      inputs.languages = read_languages(file, "languages", inputs.input_ids.size(0));
      inputs.decoder_languages = read_languages(file, "decoder_languages", inputs.input_ids.size(0));
      const int64_t vocab = config.model.vocab_size;
      check_ids(inputs.input_ids, "input_ids", vocab, flags->input, false);
      if (inputs.decoder_input_ids.defined()) check_ids(inputs.decoder_input_ids, "decoder_input_ids", vocab, flags->input, false);
      if (inputs.labels.defined()) check_ids(inputs.labels, "labels", vocab, flags->input, true);
      LoadedModel loaded = load_model_dir(std::move(config), flags->model_dir, mpi, flags->device, inputs.input_ids.size(1));
      torch::NoGradGuard no_grad;
      const ForwardResult result = forward_batch(*loaded.model, *loaded.groups, inputs, false);
      if (mpi.rank() == 0) {
        write_safetensors(flags->output, {{"logits", result.logits.cpu()},
                                          {"loss", torch::full({1}, result.loss_value, torch::kFloat)}});
        log::info("forward", "{} sequences; loss {:.6f}; wrote logits [{}, {}, {}] and loss to {}", inputs.input_ids.size(0),
                  result.loss_value, result.logits.size(0), result.logits.size(1), result.logits.size(2), flags->output);
      }
      return 0;
    });
  };
}

}  // namespace foldtron::cli
