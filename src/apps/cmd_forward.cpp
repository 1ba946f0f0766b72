// `foldtron forward`: run a Hugging Face checkpoint directory on a batch of token ids in any
// layout (DESIGN.md's contract), alone or under mpirun:
//   foldtron forward --model-dir DIR --input IN.safetensors --output OUT.safetensors [--tp 2 --ep 4 ...]
// reads `input_ids` (int64 [B, S]) and writes `logits` (fp32 [B, S, V]) and `loss` (fp32 [1], the
// mean next-token cross-entropy). DP may exceed B: ranks without a sequence still take part.
#include <memory>

#include <fmt/format.h>
#include <torch/torch.h>

#include "apps/cli_options.h"
#include "apps/commands.h"
#include "checkpoint/hf_config.h"
#include "checkpoint/hf_import.h"
#include "checkpoint/safetensors.h"
#include "config/validate.h"
#include "core/errors.h"
#include "core/log.h"
#include "core/text.h"
#include "models/decoder_lm.h"
#include "parallel/mpi_runtime.h"
#include "parallel/process_groups.h"
#include "parallel/rng.h"
#include "training/forward.h"

namespace foldtron::cli {
namespace {

struct ForwardFlags {
  ConfigOptions config;
  std::string model_dir, input, output, device = "auto";
};

// input_ids [B, S] int64 from a safetensors file, checked against the vocabulary.
torch::Tensor read_input_ids(const std::string& path, int64_t vocab) {
  const SafetensorsFile file(path);
  if (!file.has("input_ids")) {
    throw DataError(fmt::format("'{}' has no tensor 'input_ids'", path),
                    "store the token ids as input_ids, int64 [batch, sequence]");
  }
  const torch::Tensor ids = file.load("input_ids");
  if (ids.scalar_type() != torch::kLong || ids.dim() != 2 || ids.size(0) < 1 || ids.size(1) < 2) {
    throw DataError(fmt::format("'input_ids' in '{}' must be int64 [batch >= 1, sequence >= 2], got {} {}", path,
                                safetensors_dtype_name(ids.scalar_type()), shape_text(ids.sizes().vec())),
                    "write the ids as int64 with shape [batch, sequence]");
  }
  const int64_t low = ids.min().item<int64_t>(), high = ids.max().item<int64_t>();
  if (low < 0 || high >= vocab) {
    throw DataError(fmt::format("'input_ids' in '{}' holds ids in [{}, {}], outside the vocabulary [0, {})", path, low,
                                high, vocab),
                    "tokenize with the model's own tokenizer");
  }
  return ids;
}

}  // namespace

Runner register_forward(CLI::App& root) {
  auto flags = std::make_shared<ForwardFlags>();
  CLI::App* app = root.add_subcommand(
      "forward", "run a Hugging Face checkpoint on input_ids in any layout; writes logits and loss");
  app->add_option("--model-dir", flags->model_dir, "Hugging Face model directory (config.json + *.safetensors)")
      ->required();
  app->add_option("--input", flags->input, "safetensors file with input_ids, int64 [batch, sequence]")->required();
  app->add_option("--output", flags->output, "safetensors file to write: logits fp32 [B, S, V], loss fp32 [1]")
      ->required();
  flags->config.add_to(*app);
  add_device_option(*app, flags->device);
  app->footer(environment_help());
  return [flags]() {
    MpiRuntime mpi(nullptr, nullptr);
    return run_guarded([&]() -> int {
      Config config = flags->config.load_over(hf_model_config(flags->model_dir));
      const torch::Tensor ids = read_input_ids(flags->input, config.model.vocab_size);
      // The train section does not apply: make it agree with any layout and this input.
      const ParallelConfig& p = config.parallel;
      config.train.micro_batch_size = 1;
      // One micro-batch per dp rank (in groups of pp for the interleaved schedule's check).
      config.train.global_batch_size = std::max<int64_t>(1, mpi.size() / std::max<int64_t>(1, p.tp * p.cp * p.pp)) *
                                       (p.vpp > 1 ? std::max<int64_t>(1, p.pp) : 1);
      config.train.seq_length = ids.size(1);
      validate_config(config, mpi.size());
      log::set_level(config.logging.level);

      const bool cuda = use_cuda(flags->device);
      ProcessGroups groups(Topology(layout_of(config.parallel, mpi.size())), make_comm_options(config.parallel, cuda));
      const torch::Device device = rank_device(cuda, config.parallel);
      RngTracker rng(config.train.seed, groups.coords(), device);
      ParamRegistry registry;
      const bool sequence_parallel = config.parallel.sequence_parallel && groups.tp().size() > 1;
      const torch::ScalarType dtype = config.model.params_dtype == DType::kBfloat16 ? torch::kBFloat16 : torch::kFloat;
      const LayerContext ctx{&groups.tp(), sequence_parallel, config.train.seed, device, dtype, &rng, &registry, &groups,
                             config.parallel.cp_comm_type};
      DecoderLM model(ctx, config.model, config.moe,
                      ModelPart::of(config.parallel, config.model.num_layers, groups.pp().rank()));
      model.eval();
      load_hf_weights(model, registry, HfCheckpoint(flags->model_dir));

      torch::NoGradGuard no_grad;
      const ForwardResult result = forward_batch(model, groups, ids, device, sequence_parallel, false);
      if (mpi.rank() == 0) {
        write_safetensors(flags->output, {{"logits", result.logits.cpu()},
                                          {"loss", torch::full({1}, result.loss_value, torch::kFloat)}});
        log::info("forward", "{} sequences of {} tokens; loss {:.6f}; wrote logits [{}, {}, {}] and loss to {}",
                  ids.size(0), ids.size(1), result.loss_value, result.logits.size(0), result.logits.size(1),
                  result.logits.size(2), flags->output);
      }
      return 0;
    });
  };
}

}  // namespace foldtron::cli
