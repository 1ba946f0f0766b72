// What a training step reports: its record (DESIGN.md's metrics contract), the JSON line of the
// metrics file, the console progress line, and the host measurements behind them.
#pragma once

#include <cstdint>
#include <map>
#include <string>

namespace foldtron {

struct StepRecord {
  int64_t step = 0;  // 1-based
  // loss = lm + aux + z; lm_loss is the task's loss (the language-model loss for that task).
  double loss = 0, lm_loss = 0, aux_loss = 0, z_loss = 0, grad_norm = 0, lr = 0;
  int64_t tokens = 0;
  double step_time_s = 0, tokens_per_s = 0, tflops_per_gpu = 0, mfu = 0, mem_gb = 0;
  double fwd_bwd_s = 0, grad_reduce_s = 0, optimizer_s = 0;  // parts of step_time_s
  double data_s = 0;  // host time making this rank's batches (part of fwd_bwd_s)
  bool skipped = false;
  std::map<std::string, double> metrics;  // the task's further metrics
};

// An evaluation of the task's loss on a split (after training step `step`).
struct EvalRecord {
  int64_t step = 0;
  std::string split;  // "valid" or "test"
  double loss = 0;    // the mean loss over every unit (token) of the samples read
  int64_t samples = 0;
  double units = 0;
  double seconds = 0;
};

// The JSON line of one record.
std::string metrics_json(const StepRecord& record);
// The JSON line of an evaluation: {"step", "val_loss", "val_ppl", "val_samples", "val_tokens",
// "eval_time_s"}
// (test_loss, ... for the test split).
std::string metrics_json(const EvalRecord& record);
// The console line of one record: "step 3/200 | loss ... | ETA 1m02s". `moe`: show the router
// losses (`z`: the z-loss too).
std::string progress_line(const StepRecord& record, int64_t total_steps, double eta_s, bool moe, bool z);
// "1m02s" / "2h05m".
std::string format_duration(double seconds);
// Peak resident memory of this process, GiB.
double resident_memory_gb();

}  // namespace foldtron
