// What `foldtron forward` and `foldtron generate` share: a Hugging Face model directory built for
// this rank's part of a layout, and token tensors read from a safetensors file with clear errors.
#pragma once

#include <memory>
#include <string>

#include <torch/types.h>

#include "apps/cli_options.h"
#include "config/config.h"
#include "models/model.h"

namespace foldtron {
class MpiRuntime;
class ProcessGroups;
class SafetensorsFile;
}  // namespace foldtron

namespace foldtron::cli {

struct LoadedModel {
  Config config;
  std::unique_ptr<ProcessGroups> groups;
  std::shared_ptr<Model> model;  // in eval mode, weights loaded
};

// The config of `dir` (config.json) under the options' flags (read first, so a wrong directory is
// reported before anything else).
Config model_dir_config(const ConfigOptions& options, const std::string& dir);
// The model of `dir` with `config` (model_dir_config), validated for the job's world size
// (sequences of `seq_length`), on --device, weights loaded.
LoadedModel load_model_dir(Config config, const std::string& dir, MpiRuntime& mpi, const std::string& device,
                           int64_t seq_length);

// Tensor `name` of `file` as int64 [batch >= 1, length >= 1] (integer or bool dtypes); undefined
// when absent and not `required`. DataError naming the file otherwise.
torch::Tensor read_ids(const SafetensorsFile& file, const std::string& name, bool required);
// Tensor `name` of `file` as int64 [batch] language ids; undefined when absent. DataError otherwise.
torch::Tensor read_languages(const SafetensorsFile& file, const std::string& name, int64_t batch);
// ids within [0, vocab) (labels may also be -100). DataError naming the tensor and the file.
void check_ids(const torch::Tensor& ids, const std::string& name, int64_t vocab, const std::string& path, bool labels);

}  // namespace foldtron::cli
