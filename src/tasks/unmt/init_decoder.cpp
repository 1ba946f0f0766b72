// The decoder initialized from the pretrained encoder (see init_decoder.h).
#include "tasks/unmt/init_decoder.h"

#include <map>

#include <fmt/format.h>
#include <torch/torch.h>

#include "checkpoint/distributed.h"
#include "checkpoint/model_state.h"
#include "config/config_load.h"
#include "core/errors.h"
#include "core/log.h"
#include "models/registry.h"
#include "parallel/communicator.h"
#include "parallel/process_groups.h"
#include "training/checkpointing.h"

namespace foldtron {

int64_t copy_encoder_to_decoder(Model& model) {
  FT_CHECK(model.encoder_decoder(), "copy_encoder_to_decoder needs an encoder-decoder");
  FT_CHECK(model.part().pp == 1, "copy_encoder_to_decoder needs the whole model on one stage");
  std::map<std::string, torch::Tensor> tensors;
  for (const auto& item : model.named_parameters()) tensors[item.key()] = item.value();
  for (const auto& item : model.named_buffers()) tensors[item.key()] = item.value();
  const std::string encoder = "encoder.", decoder = "decoder.";
  torch::NoGradGuard no_grad;
  int64_t copied = 0;
  for (auto& [name, tensor] : tensors) {
    if (name.rfind(decoder, 0) != 0) continue;
    const auto twin = tensors.find(encoder + name.substr(decoder.size()));
    if (twin == tensors.end()) continue;  // cross-attention, or a layer past the encoder's count
    FT_CHECK(twin->second.sizes() == tensor.sizes(),
             fmt::format("{} and {} differ in shape", name, twin->first));
    tensor.copy_(twin->second);
    ++copied;
  }
  return copied;
}

int64_t init_decoder_checkpoint(const std::string& load, const std::string& output, ProcessGroups& groups) {
  Config config = checkpoint_config(load);
  if (!config.model.encoder_decoder()) {
    throw CheckpointError(fmt::format("'{}' holds a '{}' model, not an encoder-decoder", load,
                                      enum_name(config.model.architecture)),
                          "pass the checkpoint of a masked language modelling run of the translation task "
                          "(translation.mlm)");
  }
  FT_CHECK(groups.tp().size() == 1 && groups.pp().size() == 1 && groups.ep().size() == 1,
           "init_decoder_checkpoint holds the whole model on every rank");
  config.parallel = ParallelConfig{};
  const std::shared_ptr<Model> model = build_model(config, groups, torch::kCPU);
  const std::string path = resolve_checkpoint(load);
  const CheckpointReader reader(path, /*verify=*/false);
  verify_together(reader, groups.world(), config.checkpoint.writer_threads);
  read_model(*model, reader);
  const int64_t copied = copy_encoder_to_decoder(*model);
  if (copied == 0) {
    throw CheckpointError(fmt::format("the model of '{}' has no decoder tensor with an encoder twin", load),
                          "pass a checkpoint of the XLM-style encoder-decoder the translation task trains");
  }
  Communicator& world = groups.world();
  const std::string name = checkpoint_name(0);
  const std::string tmp = begin_checkpoint(world, output, name);
  const nlohmann::json files =
      write_rank_files(tmp, world.rank(), model_items(*model, groups), {}, config.checkpoint.writer_threads);
  const nlohmann::json state{{"step", 0},
                             {"consumed_samples", 0},
                             {"has_optimizer", false},
                             {"config", config_to_yaml(config)},
                             {"layout", layout_json(config.parallel, world.size())},
                             {"init_decoder", {{"from", path}, {"tensors_copied", copied}}}};
  commit_checkpoint(world, output, name, files, state, 0);
  if (world.rank() == 0) {
    log::info("unmt", "{}: {} decoder tensors copied from the encoder; wrote {}/{}; train the translation objectives "
                      "with checkpoint.load: {}",
              path, copied, output, name, output);
  }
  return copied;
}

}  // namespace foldtron
