// `foldtron convert`: Hugging Face model directories to foldtron checkpoints and back (DESIGN.md's
// contract), alone or under mpirun:
//   foldtron convert --from hf --to foldtron --input HF_DIR --output SAVE_DIR [--tp 2 --ep 4 ...]
//   foldtron convert --from foldtron --to hf --input SAVE_DIR --output HF_DIR [--max-shard-size 5GB]
// hf -> foldtron builds the model in the layout the parallel flags give (each rank reads only its
// shards) and saves it as SAVE_DIR/iter_0000000 (model weights, no optimizer state) carrying the
// directory's config.json, generation_config.json and dtypes; `foldtron train --load SAVE_DIR`
// starts from it in any layout. foldtron -> hf reads the latest checkpoint of SAVE_DIR (or a
// checkpoint folder) and writes it as save_pretrained would (checkpoint/hf_export.h).
#include <cctype>
#include <memory>

#include <fmt/format.h>
#include <torch/torch.h>

#include "apps/cli_options.h"
#include "apps/commands.h"
#include "apps/model_dir.h"
#include "checkpoint/distributed.h"
#include "checkpoint/hf_export.h"
#include "checkpoint/model_state.h"
#include "config/config_load.h"
#include "core/errors.h"
#include "core/log.h"
#include "parallel/mpi_runtime.h"
#include "parallel/process_groups.h"

namespace foldtron::cli {
namespace {

struct ConvertFlags {
  ConfigOptions config;
  std::string from, to, input, output, max_shard_size = "5GB";
};

// "5GB", "500MB", "2GiB", "1000000" -> bytes (save_pretrained's spelling: decimal units, or
// binary with an i).
int64_t parse_size(const std::string& text) {
  size_t end = 0;
  double value = 0;
  try {
    value = std::stod(text, &end);
  } catch (const std::exception&) {
    end = 0;
  }
  std::string unit = text.substr(end);
  for (char& c : unit) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  const std::vector<std::pair<std::string, double>> units{{"", 1},       {"B", 1},          {"KB", 1e3},
                                                          {"MB", 1e6},   {"GB", 1e9},       {"TB", 1e12},
                                                          {"KIB", 1024}, {"MIB", 1 << 20}, {"GIB", 1 << 30}};
  for (const auto& [name, scale] : units) {
    if (end > 0 && unit == name && value * scale >= 1) return static_cast<int64_t>(value * scale);
  }
  throw UsageError(fmt::format("--max-shard-size '{}' is not a size", text), "write it like 5GB, 500MB or 2GiB");
}

// Hugging Face directory -> foldtron checkpoint, in the layout of the parallel flags.
void hf_to_foldtron(const ConvertFlags& flags, MpiRuntime& mpi) {
  Config config = model_dir_config(flags.config, flags.input);
  const int64_t positions = config.model.max_position_embeddings;
  LoadedModel loaded = load_model_dir(std::move(config), flags.input, mpi, "cpu", positions);
  Communicator& world = loaded.groups->world();
  const std::string name = checkpoint_name(0);
  const std::string tmp = begin_checkpoint(world, flags.output, name);
  const nlohmann::json files =
      write_rank_files(tmp, world.rank(), model_items(*loaded.model, *loaded.groups), {},
                       loaded.config.checkpoint.writer_threads);
  const nlohmann::json state{{"step", 0},
                             {"consumed_samples", 0},
                             {"has_optimizer", false},
                             {"config", config_to_yaml(loaded.config)},
                             {"layout", layout_json(loaded.config.parallel, world.size())},
                             {"hf", hf_origin(flags.input)}};
  commit_checkpoint(world, flags.output, name, files, state, 0);
  if (world.rank() == 0) {
    log::info("convert", "wrote {}/{} from {} ({} ranks); train from it with --load {}", flags.output, name,
              flags.input, world.size(), flags.output);
  }
}

void foldtron_to_hf(const ConvertFlags& flags, MpiRuntime& mpi) {
  const std::string path = resolve_checkpoint(flags.input);
  if (path.empty()) {
    throw CheckpointError(fmt::format("'{}' holds no checkpoint (no metadata.json, no 'latest')", flags.input),
                          "pass a folder foldtron saved into, or one of its iter_NNNNNNN folders");
  }
  const CheckpointReader reader(path, /*verify=*/false);
  ProcessGroups groups(Topology(layout_of(ParallelConfig{}, mpi.size())), make_comm_options(ParallelConfig{}, false));
  verify_together(reader, groups.world(), flags.config.load().checkpoint.writer_threads);
  HfExportOptions options;
  options.max_shard_bytes = parse_size(flags.max_shard_size);
  export_hf(reader, flags.output, groups.world(), options);
}

}  // namespace

Runner register_convert(CLI::App& root) {
  auto flags = std::make_shared<ConvertFlags>();
  CLI::App* app = root.add_subcommand(
      "convert", "convert Hugging Face model directories to foldtron checkpoints and back");
  app->add_option("--from", flags->from, "hf or foldtron")->required()->check(CLI::IsMember({"hf", "foldtron"}));
  app->add_option("--to", flags->to, "foldtron or hf")->required()->check(CLI::IsMember({"hf", "foldtron"}));
  app->add_option("--input", flags->input, "Hugging Face model directory, or foldtron save/checkpoint folder")
      ->required();
  app->add_option("--output", flags->output, "folder to write (a new one)")->required();
  app->add_option("--max-shard-size", flags->max_shard_size,
                  "to hf: largest safetensors file (5GB, 500MB, 2GiB); more weights than that are sharded with "
                  "model.safetensors.index.json")
      ->capture_default_str();
  flags->config.add_to(*app);
  app->footer(environment_help());
  return [flags]() {
    MpiRuntime mpi(nullptr, nullptr);
    return run_guarded([&]() -> int {
      if (flags->from == flags->to) {
        throw UsageError(fmt::format("--from and --to are both '{}'", flags->from),
                         "convert --from hf --to foldtron, or --from foldtron --to hf (a checkpoint loads into any "
                         "layout as it is)");
      }
      if (flags->from == "hf") {
        hf_to_foldtron(*flags, mpi);
      } else {
        foldtron_to_hf(*flags, mpi);
      }
      return 0;
    });
  };
}

}  // namespace foldtron::cli
