// Runs `foldtron train`'s loop for a config on the ranks of `base` (the whole job, or
// MPI_COMM_SELF for the single-process reference) and returns its result (or its per-step records).
#pragma once

#include <vector>

#include <mpi.h>

#include "config/config.h"
#include "config/validate.h"
#include "mpi_test.h"
#include "parallel/process_groups.h"
#include "training/trainer.h"

namespace foldtron::testing {

inline TrainResult train_on(const Config& config, MPI_Comm base, int world) {
  validate_config(config, world);
  const Topology topology(layout_of(config.parallel, world));
  ProcessGroups groups(topology, comm_options(), base);
  TrainOptions options;
  options.device = device();
  return train(config, groups, options);
}

inline std::vector<StepRecord> run_training(const Config& config, MPI_Comm base, int world) {
  return train_on(config, base, world).steps;
}

}  // namespace foldtron::testing
