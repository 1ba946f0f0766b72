// Step records, metrics lines and progress lines (see metrics.h).
#include "training/metrics.h"

#include <sys/resource.h>

#include <cmath>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace foldtron {

std::string metrics_json(const StepRecord& r) {
  nlohmann::json j{{"step", r.step},
                   {"loss", r.loss},
                   {"lm_loss", r.lm_loss},
                   {"aux_loss", r.aux_loss},
                   {"z_loss", r.z_loss},
                   {"grad_norm", r.grad_norm},
                   {"lr", r.lr},
                   {"tokens", r.tokens},
                   {"step_time_s", r.step_time_s},
                   {"tokens_per_s", r.tokens_per_s},
                   {"tflops_per_gpu", r.tflops_per_gpu},
                   {"mfu", r.mfu},
                   {"mem_gb", r.mem_gb},
                   {"fwd_bwd_s", r.fwd_bwd_s},
                   {"grad_reduce_s", r.grad_reduce_s},
                   {"optimizer_s", r.optimizer_s},
                   {"data_s", r.data_s},
                   {"skipped", r.skipped}};
  for (const auto& [name, value] : r.metrics) j[name] = value;
  return j.dump();
}

std::string metrics_json(const EvalRecord& r) {
  const std::string prefix = r.split == "valid" ? "val" : r.split;
  nlohmann::json j{{"step", r.step},
                   {prefix + "_loss", r.loss},
                   {prefix + "_ppl", std::exp(r.loss)},
                   {prefix + "_samples", r.samples},
                   {prefix + "_tokens", static_cast<int64_t>(r.units)},
                   {"eval_time_s", r.seconds}};
  return j.dump();
}

std::string progress_line(const StepRecord& r, int64_t total_steps, double eta_s, bool moe, bool z) {
  std::string metrics;
  for (const auto& [name, value] : r.metrics) metrics += fmt::format(" | {} {:.4f}", name, value);
  return fmt::format(
      "step {}/{} | loss {:.4f}{}{} | lr {:.3e} | grad norm {:.3f} | {:.0f} tokens/s | {:.3f} TFLOP/s/gpu | MFU "
      "{:.2f}% | mem {:.2f} GB | {:.3f} s/step | ETA {}",
      r.step, total_steps, r.loss,
      moe ? fmt::format(" (lm {:.4f} + aux {:.4f}{})", r.lm_loss, r.aux_loss, z ? fmt::format(" + z {:.4f}", r.z_loss) : "")
          : "",
      metrics, r.lr, r.grad_norm, r.tokens_per_s, r.tflops_per_gpu, 100.0 * r.mfu, r.mem_gb, r.step_time_s,
      format_duration(eta_s));
}

std::string format_duration(double seconds) {
  const auto total = static_cast<int64_t>(seconds);
  return total >= 3600 ? fmt::format("{}h{:02}m", total / 3600, (total % 3600) / 60)
                       : fmt::format("{}m{:02}s", total / 60, total % 60);
}

double resident_memory_gb() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / (1024.0 * 1024.0);  // ru_maxrss is in KiB
}

}  // namespace foldtron
