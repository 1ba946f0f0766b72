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
  bool skipped = false;
  std::map<std::string, double> metrics;  // the task's further metrics
};

// The JSON line of one record.
std::string metrics_json(const StepRecord& record);
// The console line of one record: "step 3/200 | loss ... | ETA 1m02s". `moe`: show the router
// losses (`z`: the z-loss too).
std::string progress_line(const StepRecord& record, int64_t total_steps, double eta_s, bool moe, bool z);
// "1m02s" / "2h05m".
std::string format_duration(double seconds);
// Peak resident memory of this process, GiB.
double resident_memory_gb();

}  // namespace foldtron
