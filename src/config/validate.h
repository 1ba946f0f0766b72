// Whole-config validation. Runs on every rank before any communicator exists and reports every
// problem at once, each naming the field, its value and the constraint, with a hint.
#pragma once

#include <cstdint>
#include <vector>

#include "config/config.h"
#include "core/errors.h"

namespace foldtron {

// world <= 0 skips the checks that need the number of ranks.
std::vector<ConfigProblem> check_config(const Config& config, int64_t world);

// Throws one ConfigError listing every problem of check_config.
void validate_config(const Config& config, int64_t world);

}  // namespace foldtron
