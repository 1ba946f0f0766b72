// Hugging Face model directories and token files for the CLI (see model_dir.h).
#include "apps/model_dir.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include "checkpoint/hf_config.h"
#include "checkpoint/hf_import.h"
#include "checkpoint/safetensors.h"
#include "config/validate.h"
#include "core/errors.h"
#include "core/log.h"
#include "core/text.h"
#include "layers/embedding.h"
#include "models/registry.h"
#include "parallel/mpi_runtime.h"
#include "parallel/process_groups.h"

namespace foldtron::cli {

Config model_dir_config(const ConfigOptions& options, const std::string& dir) {
  return options.load_over(hf_model_config(dir));
}

LoadedModel load_model_dir(Config config_in, const std::string& dir, MpiRuntime& mpi, const std::string& device_flag,
                           int64_t seq_length) {
  LoadedModel loaded;
  Config& config = loaded.config;
  config = std::move(config_in);
  // The train section does not apply: make it agree with any layout and this input.
  const ParallelConfig& p = config.parallel;
  config.train.micro_batch_size = 1;
  // One micro-batch per dp rank (in groups of pp for the interleaved schedule's check).
  config.train.global_batch_size =
      std::max<int64_t>(1, mpi.size() / std::max<int64_t>(1, p.tp * p.cp * p.pp)) * (p.vpp > 1 ? std::max<int64_t>(1, p.pp) : 1);
  config.train.seq_length = seq_length;
  validate_config(config, mpi.size());
  log::set_level(config.logging.level);
  const bool cuda = use_cuda(device_flag);
  loaded.groups = std::make_unique<ProcessGroups>(Topology(layout_of(config.parallel, mpi.size())),
                                                  make_comm_options(config.parallel, cuda));
  const torch::Device device = rank_device(cuda, config.parallel);
  loaded.model = build_model(config, *loaded.groups, device);
  loaded.model->eval();
  load_hf_weights(*loaded.model, HfCheckpoint(dir));
  return loaded;
}

torch::Tensor read_ids(const SafetensorsFile& file, const std::string& name, bool required) {
  if (!file.has(name)) {
    if (!required) return torch::Tensor();
    throw DataError(fmt::format("'{}' has no tensor '{}'", file.path(), name),
                    fmt::format("store the token ids as {}, int64 [batch, sequence]", name));
  }
  torch::Tensor ids = file.load(name);
  const bool integral = ids.scalar_type() == torch::kLong || ids.scalar_type() == torch::kInt ||
                        ids.scalar_type() == torch::kBool;
  if (!integral || ids.dim() != 2 || ids.size(0) < 1 || ids.size(1) < 1) {
    throw DataError(fmt::format("'{}' in '{}' must be int64 [batch >= 1, length >= 1], got {} {}", name, file.path(),
                                safetensors_dtype_name(ids.scalar_type()), shape_text(ids.sizes().vec())),
                    "write it as int64 with shape [batch, length]");
  }
  return ids.to(torch::kLong);
}

torch::Tensor read_languages(const SafetensorsFile& file, const std::string& name, int64_t batch) {
  if (!file.has(name)) return torch::Tensor();
  const torch::Tensor ids = file.load(name);
  if (ids.scalar_type() != torch::kLong || ids.dim() != 1 || ids.size(0) != batch) {
    throw DataError(fmt::format("'{}' in '{}' must be int64 [batch {}], got {} {}", name, file.path(), batch,
                                safetensors_dtype_name(ids.scalar_type()), shape_text(ids.sizes().vec())),
                    "write one language id per sequence, int64");
  }
  return ids;
}

void check_ids(const torch::Tensor& ids, const std::string& name, int64_t vocab, const std::string& path, bool labels) {
  const torch::Tensor real = labels ? ids.masked_select(ids != kIgnoreIndex) : ids.reshape({-1});
  if (real.numel() == 0) return;
  const int64_t low = real.min().item<int64_t>(), high = real.max().item<int64_t>();
  if (low < 0 || high >= vocab) {
    throw DataError(fmt::format("'{}' in '{}' holds ids in [{}, {}], outside the vocabulary [0, {}){}", name, path, low,
                                high, vocab, labels ? " (and -100 for ignored labels)" : ""),
                    "tokenize with the model's own tokenizer");
  }
}

}  // namespace foldtron::cli
