// A discourse relation classifier as a job holds it: the config, the vocabularies, the network, the
// memory bank (this data-parallel rank's shard) and the frozen contextual encoder, on one rank of
// the job's layout. Data parallelism: every rank holds the whole network; training instances are
// split over dp, gradients summed over dp; ranks of one dp index (tp, pp, cp) compute alike and
// differ only in their share of the encoder.
//
// Saved as a folder, written as FOLDER.partial and renamed into place when complete:
//   discourse.json                 format, resolved config, vocabularies, sizes, dp, scores
//   model.safetensors              the network's parameters by name
//   memory-R-of-D.safetensors      dp rank R's shard of the memory (keys, labels, active)
// A folder with a memory loads with the dp it was saved with.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/types.h>

#include "config/config.h"
#include "tasks/discourse/features.h"
#include "tasks/discourse/memory.h"
#include "tasks/discourse/metrics.h"
#include "tasks/discourse/model.h"

namespace foldtron {

class ProcessGroups;

// The relation types of discourse.types (whitespace-separated).
std::vector<std::string> discourse_types(const DiscourseConfig& config);

// Every problem of the discourse section (and the parallel layout it allows) at once (ConfigError).
void validate_discourse_config(const Config& config);

// CheckpointError when `dir` exists and is not a classifier folder (it would be replaced), or
// when its parent cannot be written. Called before training, so a long run is not lost at the end.
void check_save_folder(const std::string& dir);

// The config a classifier folder was saved with; CheckpointError when it is not one.
Config discourse_saved_config(const std::string& dir);

// The instances of DATA/<split>.json of the configured types at the level, each with the labels
// that are classes of the level (an instance without one is left out: EntRel at 4-way, say);
// training instances with two senses duplicated. DataError naming the file when it is missing.
std::vector<DiscourseInstance> read_discourse_split(const DiscourseConfig& config, const std::string& split,
                                                    bool duplicate);

class DiscourseClassifier {
 public:
  // A new classifier for `train` (vocabularies from it; the memory holds one slot per instance).
  // It seeds torch's generator with discourse.seed (the same network on every rank), then with a
  // stream per dp rank for dropout (so runs with dropout differ between dp layouts).
  DiscourseClassifier(const Config& config, const std::vector<DiscourseInstance>& train, ProcessGroups& groups,
                      torch::Device device);
  // A saved one, with `config` (discourse_saved_config(dir), adjusted: the job's layout, another
  // corpus, ...). Collective.
  static std::unique_ptr<DiscourseClassifier> load(const std::string& dir, const Config& config, ProcessGroups& groups,
                                                   torch::Device device);
  ~DiscourseClassifier();

  const Config& config() const { return config_; }
  SenseLevel level() const { return level_; }
  const DiscourseVocabularies& vocabularies() const { return vocabularies_; }
  DiscourseNet& net() { return net_; }
  MemoryBank* memory() { return memory_.get(); }
  ProcessGroups& groups() const { return groups_; }
  torch::Device device() const { return device_; }

  // Words, characters and (with the encoder) contextual vectors, packed on the device.
  // Collective with an encoder.
  EncodedSet encode(const std::vector<DiscourseInstance>& instances) const;
  // A batch of this rank: the memory read (collective over dp when the memory is filled; every
  // rank calls it alike, with its batch possibly empty) and the relation log-probabilities [b, K].
  struct Output {
    torch::Tensor z, log_probs;
    std::optional<MemoryRead> read;
  };
  Output forward(const DiscourseBatch& batch);
  // Relation probabilities [n, K] of every instance on every rank (instances split over dp, eval
  // mode, no gradient). Collective over dp.
  torch::Tensor predict(const EncodedSet& instances);
  // Fills the memory from the training instances (this rank's slots; eval mode): keys z, labels,
  // active where the prediction (reading the previous memory without the own slot) is right.
  // Returns the share of training instances classified correctly. Collective over dp.
  double refresh_memory(const EncodedSet& train);
  // The predictions' labels scored against the instances' (the multi-sense rule).
  DiscourseScores score(const std::vector<DiscourseInstance>& instances, const torch::Tensor& probs) const;

  // Writes the folder (see above). Collective. `summary` goes into discourse.json.
  void save(const std::string& dir, const nlohmann::json& summary) const;

 private:
  DiscourseClassifier(const Config& config, DiscourseVocabularies vocabularies, int64_t slots, ProcessGroups& groups,
                      torch::Device device);

  Config config_;
  SenseLevel level_;
  DiscourseVocabularies vocabularies_;
  ProcessGroups& groups_;
  torch::Device device_;
  std::unique_ptr<ContextEncoder> encoder_;
  DiscourseNet net_{nullptr};
  std::unique_ptr<MemoryBank> memory_;
};

// JSON lines {"ID", "Sense", "probabilities": {class: p}}, one per instance, written atomically.
void write_discourse_predictions(const std::string& path, const std::vector<DiscourseInstance>& instances,
                                 const std::vector<std::string>& classes, const torch::Tensor& probs);

// Scores as JSON: accuracy, macro_f1, per_class {precision, recall, f1, gold, predicted},
// binary_f1, classes and the confusion matrix.
nlohmann::ordered_json scores_json(const DiscourseScores& scores);

}  // namespace foldtron
