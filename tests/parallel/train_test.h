// Runs `foldtron train`'s loop for a config on the ranks of `base` (the whole job, or
// MPI_COMM_SELF for the single-process reference) and returns its result (or its per-step
// records, or with every step's gathered gradients), and compares a layout's gradients and final
// parameters with the single-process run's. A run configured to recompute activations must
// have recomputed some.
#pragma once

#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include <mpi.h>

#include "config/config.h"
#include "config/validate.h"
#include "mpi_test.h"
#include "parallel/process_groups.h"
#include "training/hooks.h"
#include "training/trainer.h"

namespace foldtron::testing {

// Every parameter's reduced gradient after each step, gathered to the global tensor (CPU), by name.
using GradientsByName = std::map<std::string, torch::Tensor>;
class GradientRecorder : public StepHook {
 public:
  std::string name() const override { return "record_gradients"; }
  void after_step(TrainState& state, const StepRecord& /*record*/) override {
    state.buffers->gather_grads();  // the distributed optimizer's shards, everywhere
    GradientsByName grads;
    for (const auto& item : state.model->named_parameters()) {
      grads[item.key()] = gather_full(state.buffers->main_grad(item.value()),
                                      state.model->registry().info(item.value()), state.groups);
    }
    steps.push_back(std::move(grads));
  }
  std::vector<GradientsByName> steps;
};

struct Recorded {
  TrainResult result;
  std::vector<GradientsByName> grads;  // by step
};

inline Recorded train_recorded(const Config& config, MPI_Comm base, int world, bool keep_final_params = false,
                               bool record_gradients = true, const TaskFactory& make_task = {}) {
  validate_config(config, world);
  const Topology topology(layout_of(config.parallel, world));
  ProcessGroups groups(topology, comm_options(), base);
  TrainOptions options;
  options.device = device();
  options.keep_final_params = keep_final_params;
  options.make_task = make_task;
  auto recorder = std::make_shared<GradientRecorder>();
  if (record_gradients) options.hooks.push_back(recorder);
  Recorded out{train(config, groups, options), std::move(recorder->steps)};
  if (config.model.recompute != Recompute::kNone) {
    EXPECT_GT(out.result.recomputed_regions, 0) << "model.recompute is " << enum_name(config.model.recompute)
                                                << " but nothing was recomputed";
  }
  return out;
}

inline TrainResult train_on(const Config& config, MPI_Comm base, int world, bool keep_final_params = false) {
  return train_recorded(config, base, world, keep_final_params, false).result;
}

// Every gradient this rank recorded equals the reference's of the same step and name within `tol`
// of the reference tensor's largest entry, or of 1e-3 of the model's largest gradient entry when
// that is larger: some gradients are zero in exact arithmetic (a key bias shifts every score of
// a query alike) and hold only rounding noise. Returns the worst relative difference.
inline double expect_same_gradients(const Recorded& got, const Recorded& reference, double tol = 1e-5) {
  double worst = 0;
  EXPECT_EQ(got.grads.size(), reference.grads.size());
  for (size_t step = 0; step < std::min(got.grads.size(), reference.grads.size()); ++step) {
    double model_max = 0;
    for (const auto& [name, grad] : reference.grads[step]) model_max = std::max(model_max, grad.abs().max().item<double>());
    for (const auto& [name, grad] : got.grads[step]) {
      const auto it = reference.grads[step].find(name);
      if (it == reference.grads[step].end()) {
        ADD_FAILURE() << "parameter " << name << " is not in the single-process model";
        continue;
      }
      const double scale = std::max({it->second.abs().max().item<double>(), 1e-3 * model_max, 1e-30});
      if (grad.sizes() == it->second.sizes()) {
        worst = std::max(worst, (grad - it->second).abs().max().item<double>() / scale);
      }
      EXPECT_TRUE(close(grad, it->second, tol, tol * scale)) << "gradient of " << name << " at step " << step + 1;
    }
  }
  return worst;
}

// Each step of `got` has the reference's task loss, router losses, gradient norm and task metrics
// within `tol` of the reference's value; returns the worst relative difference.
inline double expect_same_steps(const Recorded& got, const Recorded& reference, double tol = 1e-5) {
  double worst = 0;
  const auto& steps = got.result.steps;
  const auto& want_steps = reference.result.steps;
  EXPECT_EQ(steps.size(), want_steps.size());
  const auto compare = [&](double a, double b, const std::string& what, size_t step) {
    EXPECT_NEAR(a, b, tol * std::abs(b)) << what << " at step " << step + 1;
    if (b != 0) worst = std::max(worst, std::abs(a - b) / std::abs(b));
  };
  for (size_t i = 0; i < std::min(steps.size(), want_steps.size()); ++i) {
    const StepRecord &have = steps[i], &want = want_steps[i];
    compare(have.lm_loss, want.lm_loss, "the task loss", i);
    compare(have.aux_loss, want.aux_loss, "the load-balancing loss", i);
    compare(have.z_loss, want.z_loss, "the z-loss", i);
    compare(have.grad_norm, want.grad_norm, "the gradient norm", i);
    for (const auto& [name, value] : want.metrics) {
      const auto it = have.metrics.find(name);
      if (it == have.metrics.end()) {
        ADD_FAILURE() << name << " is missing at step " << i + 1;
        continue;
      }
      compare(it->second, value, name, i);
    }
  }
  return worst;
}

inline std::vector<StepRecord> run_training(const Config& config, MPI_Comm base, int world) {
  return train_on(config, base, world).steps;
}

// Optimizer settings for comparing final parameters. In its first steps Adam moves every element
// by about +-lr whatever its gradient's size, so an element whose gradient is near zero (a sum
// that cancels) flips its step on a rounding difference of another summation order; with eps
// 1e-4 such elements move in proportion to their gradient instead, and lr 1e-3 (the tiny
// presets' own) keeps five steps in the smooth regime. A wrong gradient still moves parameters
// by about lr, far beyond the 1e-5 the tests allow.
inline const std::vector<std::string> kSmoothAdam{"train.lr=0.001", "train.adam_eps=1e-4"};

// The largest difference between this rank's final parameters and the same elements of the
// single-process run's, relative to the reference tensor's largest entry. Every reference
// parameter must appear on some rank (counted in `covered`, by name).
inline double final_param_difference(const TrainResult& got, const TrainResult& reference,
                                     std::map<std::string, int64_t>* covered = nullptr) {
  std::map<std::string, torch::Tensor> full;
  for (const RankParam& p : reference.final_params) full[p.name] = p.value;
  double worst = 0;
  for (const RankParam& p : got.final_params) {
    const auto it = full.find(p.name);
    if (it == full.end()) {
      ADD_FAILURE() << "parameter " << p.name << " is not in the single-process model";
      continue;
    }
    torch::Tensor want = it->second;
    if (p.info.expert) want = want.narrow(0, p.info.expert_begin, p.value.size(0));  // this rank's experts
    want = shard_of(want, p.info);
    if (want.sizes() != p.value.sizes()) {
      ADD_FAILURE() << "parameter " << p.name << " has the wrong shape";
      continue;
    }
    const double scale = std::max(want.abs().max().item<double>(), 1e-12);
    worst = std::max(worst, (p.value.to(torch::kDouble) - want.to(torch::kDouble)).abs().max().item<double>() / scale);
    if (covered) ++(*covered)[p.name];
  }
  return worst;
}

// Names of the reference's parameters that no rank of the job holds (collective over the world).
inline std::vector<std::string> uncovered_params(const TrainResult& reference,
                                                const std::map<std::string, int64_t>& covered) {
  std::vector<std::string> missing;
  for (const RankParam& p : reference.final_params) {
    torch::Tensor count = torch::full({1}, covered.count(p.name) ? 1.0 : 0.0, torch::kDouble);
    world().all_reduce(count);
    if (count.item<double>() == 0) missing.push_back(p.name);
  }
  return missing;
}

}  // namespace foldtron::testing
