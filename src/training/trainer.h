// The training loop. For each step the global batch (the same samples on every layout for the
// same seed) is split over dp ranks and into micro-batches (gradient accumulation), which run
// through the pipeline schedule (pipeline/schedule.h; one stage without pipeline parallelism).
// The task (training/task.h) makes the batches (after its prepare() for the global batch, where
// back-translation generates) and the loss, each micro-batch's share of the global mean, so
// summed gradients are those of the global mean. Gradients are reduced in buckets
// during the last micro-batch's backward (ParamBuffers: over dp_cp for dense parameters, edp for
// experts; reduce-scattered with the distributed optimizer), clipped by the global norm, and
// applied by AdamW. A step whose loss or gradient norm is not finite is skipped with a warning;
// max_bad_steps in a row abort the run. Registered hooks run around each step (the expert-bias
// update). With train.eval_interval the loop evaluates the loss on the validation split every
// that many steps and after the last (forward only, dropout off; the same eval_iters global
// batches each time) and logs it as val_loss. Rank 0 logs progress (step/total, ETA, loss, lr,
// grad norm, tokens/s, TFLOP/s per GPU, MFU, memory) and writes one JSON record per logged step
// (and per evaluation) to logging.metrics_file. With a
// Checkpointer the loop saves every checkpoint.save_interval steps, at the end, and at the end of
// the step in which SIGTERM/SIGINT arrived (then stops, without evaluating); a resumed run appends
// to the metrics file.
#pragma once

#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <torch/types.h>

#include "config/config.h"
#include "core/errors.h"
#include "parallel/sharding.h"
#include "training/checkpointing.h"
#include "training/hooks.h"
#include "training/metrics.h"
#include "training/task.h"
#include "training/train_state.h"

namespace foldtron {

class ProcessGroups;

// A parameter as this rank holds it: its name in the model, its values (fp32, CPU), its split.
struct RankParam {
  std::string name;
  torch::Tensor value;
  ParamInfo info;
};

struct TrainResult {
  std::vector<StepRecord> steps;
  std::vector<EvalRecord> evaluations;  // validation during training (train.eval_interval)
  int64_t recomputed_regions = 0;  // checkpointed regions recomputed in backward during training
  std::string sample;  // continuation of logging.sample_prompt (empty when not asked)
  // Bytes of optimizer state (fp32 main weights and moments) on this rank, dense and expert.
  int64_t dense_state_bytes = 0, expert_state_bytes = 0;
  std::vector<RankParam> final_params;  // with TrainOptions::keep_final_params
  bool stopped = false;  // stopped by SIGTERM/SIGINT before train_iters (after saving)
};

// Makes the job's task from the config; an empty one means the language-model task.
using TaskFactory = std::function<std::unique_ptr<Task>(const Config&)>;

struct TrainOptions {
  torch::Device device = torch::kCPU;
  TaskFactory make_task;
  bool keep_final_params = false;  // return this rank's parameters after the last step
  // Return every step's record (TrainResult::steps); a long job leaves it off, since the records
  // grow with the steps (the metrics file keeps them).
  bool keep_step_records = true;
  std::vector<std::shared_ptr<StepHook>> hooks;  // run after the default ones
};

class Trainer {
 public:
  Trainer(TrainState& state, Task& task);
  void add_hook(std::shared_ptr<StepHook> hook) { hooks_.push_back(std::move(hook)); }
  // Saves through `checkpointer` (checkpoint.save must be set); null: never.
  void set_checkpointer(Checkpointer* checkpointer) { checkpointer_ = checkpointer; }
  // Whether run() stopped early on SIGTERM/SIGINT.
  bool stopped() const { return stopped_; }
  // The validations run() made.
  const std::vector<EvalRecord>& evaluations() const { return evaluations_; }
  // One optimizer step on the next global batch.
  StepRecord step();
  // The mean loss over the first train.eval_iters global batches of `split` (forward only, every
  // rank takes part); step: the state's step.
  EvalRecord evaluate(Split split);
  // Steps until train.train_iters with the progress log, the metrics file, validation and the
  // profiled step; returns every step's record when `keep_records` (else none).
  std::vector<StepRecord> run(bool keep_records = true);

 private:
  struct Sums;
  // Forward and backward of every micro-batch of the step through the pipeline schedule; each
  // loss is divided by the global batch's `units` (Task::loss_units).
  // The global batch of a pass: its split and first sample.
  struct GlobalBatch {
    Split split;
    int64_t first;
  };
  void forward_backward(Sums& sums, const GlobalBatch& global, double units, bool forward_only);
  // The micro-batch `micro` of `global` on this rank (made once per pass, context-parallel chunks
  // cut); the host time it took is added to sums.data_seconds.
  const Batch& micro_batch(const GlobalBatch& global, int64_t micro, Sums& sums);
  // The task's loss and metrics summed over the job: [loss, metrics in metric_names() order].
  torch::Tensor reduce_task_terms(Sums& sums);
  // Loss terms over the whole job and the gradient norm, into `record`.
  void reduce(Sums& sums, StepRecord& record);
  // The optimizer step, or the skip of a non-finite one.
  void update(StepRecord& record);
  void log_start() const;
  // The metrics file, continued after the loaded step on a resumed run.
  std::ofstream open_metrics() const;
  // After a step: saves when the interval or a stop signal (on any rank) asks; otherwise
  // completes an asynchronous save that has finished. Returns whether to stop.
  bool checkpoint_after_step();
  // A periodic save failed: rethrown unless checkpoint.on_save_error is warn (then counted, logged,
  // and saved_step_ reset). Call it in the catch block.
  void survive_failed_save(const CheckpointError& error);
  // Completes a pending save (waiting for its writers with `wait`); its failure goes to
  // survive_failed_save.
  void complete_save(bool wait);

  TrainState& state_;
  Task& task_;
  std::vector<std::shared_ptr<StepHook>> hooks_;
  int64_t dp_, micro_batches_, per_rank_;
  std::map<int64_t, Batch> batches_;  // this pass's micro-batches, made once each
  Checkpointer* checkpointer_ = nullptr;
  int64_t saved_step_ = -1;  // the step of the last save started by this run (-1 after a failed one)
  bool stopped_ = false;
  int64_t failed_saves_ = 0;  // periodic saves that failed under checkpoint.on_save_error: warn
  std::vector<EvalRecord> evaluations_;
};

// The standard job: the train state, the task (options.make_task, or the language-model task)
// and the default hooks; trains, then (language model) writes a continuation of
// logging.sample_prompt when logging.sample_tokens asks for one.
TrainResult train(const Config& config, ProcessGroups& groups, const TrainOptions& options);

// `foldtron eval`: the checkpoint checkpoint.load names, evaluated on the validation split and on
// the test split when it has samples (the task as in train()).
std::vector<EvalRecord> evaluate_checkpoint(const Config& config, ProcessGroups& groups, torch::Device device,
                                            const TaskFactory& make_task = {});

}  // namespace foldtron
