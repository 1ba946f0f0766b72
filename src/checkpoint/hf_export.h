// foldtron checkpoint -> Hugging Face model directory, the way save_pretrained writes one:
// config.json, generation_config.json (where the model has one), and the weights in safetensors
// files under the original names (hf_names.h), in one model.safetensors or, past the shard size,
// model-0000k-of-0000K.safetensors with model.safetensors.index.json. A checkpoint converted from
// Hugging Face keeps what it came with (config.json, generation_config.json, each tensor's dtype,
// the experts' layout), so HF -> foldtron -> HF gives the same tensors bit for bit; a model trained
// from scratch gets a config.json made from its config, checked by reading it back: a model the
// family cannot express (sigmoid routing in Mixtral, learned positions in Marian, ...) is refused
// with the keys that differ.
//
// The export reads the checkpoint tensor by tensor (one Hugging Face tensor in memory at a time)
// and writes each shard file streaming, so no rank ever holds the whole model; under mpirun the
// shards are spread over the ranks. It writes into OUT.tmp and renames it to OUT when complete.
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

namespace foldtron {

class CheckpointReader;
class Communicator;

struct HfExportOptions {
  int64_t max_shard_bytes = 5'000'000'000;  // save_pretrained's default ("5GB")
};

// Collective over `world`. CheckpointError when the model has tensors Hugging Face has no name
// for or its family cannot express it; IoError when `out` exists and is not empty.
void export_hf(const CheckpointReader& reader, const std::string& out, Communicator& world,
               const HfExportOptions& options = {});

// What a checkpoint converted from the Hugging Face directory `dir` carries for its export: its
// config.json and generation_config.json, each tensor's dtype and the experts' layout (the "hf"
// object of the checkpoint's state).
nlohmann::json hf_origin(const std::string& dir);

}  // namespace foldtron
