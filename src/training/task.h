// The Task interface: what differs between training jobs on the same parallel machinery. A task
// makes batches (from global sample indices, so every layout sees the same data for the same
// seed), computes the loss and its metrics from the model's output, and says how much compute a
// step is. The language-model task (lm_task.h) is the first; translation and discourse tasks
// plug in the same way.
//
// Loss convention: a step's loss is the mean over the `units` of the whole global batch (tokens
// for language modelling), so every micro-batch's loss is its sum divided by that global count
// (Task::loss_units), and gradients summed over micro-batches and data-parallel ranks are those
// of the global mean.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <torch/types.h>

#include "data/gpt_dataset.h"  // Split
#include "models/model.h"

namespace foldtron {

class Communicator;
class ProcessGroups;

// One micro-batch of whole sequences (the trainer cuts context-parallel chunks).
struct Batch {
  ModelInputs inputs;
  torch::Tensor labels;  // [s, b] (encoder-decoder: [t, b]) int64 targets; kIgnoreIndex: no loss
  // Tasks with several objectives in one batch: each sequence's objective [b] int64 and loss
  // weight [b] fp32, and each objective's loss units in the whole global batch [objectives]
  // fp64 (its metric's denominator). Undefined otherwise.
  torch::Tensor objectives, weights, objective_units;
};

struct LossTerms {
  torch::Tensor loss;  // scalar to backpropagate: this micro-batch's share of the global mean
  // Further metrics by name (metric_names()): detached scalars, this rank's shares, already
  // divided like the loss, which sum over micro-batches and data-parallel ranks to the step's value.
  std::map<std::string, torch::Tensor> metrics;
};

class Task {
 public:
  virtual ~Task() = default;
  virtual std::string name() const = 0;
  // A line for the log: the data, its size.
  virtual std::string describe() const = 0;
  // Samples in a split (0: the task has no such split).
  virtual int64_t num_samples(Split split) const = 0;
  // Called on every rank with the global batch [first, first + count) of `split` before its
  // micro-batches are made, with the model (collectives allowed: every rank calls it alike).
  // Tasks whose batches come from the model itself (back-translation) make them here.
  virtual void prepare(Split /*split*/, int64_t /*first*/, int64_t /*count*/, Model& /*model*/,
                       ProcessGroups& /*groups*/) {}
  // Samples [first, first + count) of `split` (indices run on across epochs) on `device`.
  virtual Batch batch(Split split, int64_t first, int64_t count, torch::Device device) const = 0;
  // Tokens the model reads for samples [first, first + count) of the training split (tokens/s).
  virtual double tokens(int64_t first, int64_t count) const = 0;
  // The loss units (e.g. target tokens) of samples [first, first + count): the global mean's
  // denominator when they are the step's global batch.
  virtual double loss_units(Split split, int64_t first, int64_t count) const = 0;
  // The loss of `batch` from the last chunk's vocab-parallel logits ([s/cp, b, Vp/tp]; with
  // context parallelism `labels` are this rank's chunks too), divided by `units`. `vocab`: the
  // real vocabulary (logits past it are padding).
  virtual LossTerms loss(const torch::Tensor& logits, const Batch& batch, double units, Communicator& tp,
                         int64_t vocab) const = 0;
  // Model FLOPs (forward and backward, Megatron's count) of samples [first, first + count).
  virtual double flops(int64_t first, int64_t count) const = 0;
  // The names of the metrics loss() returns besides the loss itself (the same on every rank).
  virtual std::vector<std::string> metric_names() const { return {}; }
};

}  // namespace foldtron
