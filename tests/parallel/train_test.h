// Runs `foldtron train`'s loop for a config on the ranks of `base` (the whole job, or
// MPI_COMM_SELF for the single-process reference) and returns its result (or its per-step
// records), and compares a layout's final parameters with the single-process run's.
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
#include "training/trainer.h"

namespace foldtron::testing {

inline TrainResult train_on(const Config& config, MPI_Comm base, int world, bool keep_final_params = false) {
  validate_config(config, world);
  const Topology topology(layout_of(config.parallel, world));
  ProcessGroups groups(topology, comm_options(), base);
  TrainOptions options;
  options.device = device();
  options.keep_final_params = keep_final_params;
  return train(config, groups, options);
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
