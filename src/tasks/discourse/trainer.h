// Training a discourse relation classifier (`foldtron discourse train`): epochs over the training
// instances in an order drawn from the seed (the same on every rank); each step's batch of
// discourse.batch_size instances split over dp; the loss is the mean over the batch of the relation
// NLL (with the memory: of the fused distribution) plus connective_weight times the connective
// cross-entropy summed over the instances with a connective and divided by the whole batch;
// gradients summed over dp, clipped by their global
// norm, AdamW. After each epoch the memory is refreshed (classifier.h) and the dev split scored;
// the epoch with the best dev score (macro-F1 at 4-way, accuracy at 11-way) is kept, scored on
// test, saved to checkpoint.save (before its test predictions are written). Rank 0 logs each epoch and
// writes a JSON record per epoch and per final split to logging.metrics_file.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <torch/types.h>

#include "config/config.h"
#include "tasks/discourse/metrics.h"

namespace foldtron {

class ProcessGroups;

struct DiscourseEpoch {
  int64_t epoch = 0, steps = 0;
  double loss = 0, relation_loss = 0, connective_loss = 0;  // means over the epoch's steps
  double memory_correct = 0;  // share of training instances classified right at the refresh (memory only)
  DiscourseScores dev;
  double seconds = 0, instances_per_second = 0;
};

struct DiscourseTrainResult {
  std::vector<DiscourseEpoch> epochs;
  std::vector<double> step_losses;  // every step's loss (the same on every rank)
  int64_t best_epoch = 0;
  DiscourseScores dev, test;  // of the best epoch (test empty when the split has no instance)
  std::vector<torch::Tensor> final_params;  // the kept network's parameters (CPU), in named order
};

struct DiscourseTrainOptions {
  torch::Device device = torch::kCPU;
  std::string predictions;  // JSON lines of the test predictions; empty: none
};

DiscourseTrainResult train_discourse(const Config& config, ProcessGroups& groups, const DiscourseTrainOptions& options);

}  // namespace foldtron
