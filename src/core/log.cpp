// Rank-aware logging (see log.h). Lines go to stderr for warnings/errors and stdout otherwise,
// each written with one call so lines from different ranks do not interleave mid-line.
#include "core/log.h"

#include <chrono>
#include <cstdio>
#include <ctime>

#include "core/errors.h"

namespace foldtron::log {
namespace {

struct State {
  int rank = 0;
  Level level = Level::kInfo;
  bool all_ranks = false;
};

State& state() {
  static State s;
  return s;
}

const char* level_label(Level level) {
  switch (level) {
    case Level::kDebug: return "debug: ";
    case Level::kInfo: return "";
    case Level::kWarning: return "warning: ";
    case Level::kError: return "error: ";
  }
  return "";
}

}  // namespace

Level parse_level(std::string_view name) {
  if (name == "debug") return Level::kDebug;
  if (name == "info") return Level::kInfo;
  if (name == "warning") return Level::kWarning;
  if (name == "error") return Level::kError;
  throw UsageError(fmt::format("unknown log level '{}'", name),
                   "use one of: debug, info, warning, error");
}

void set_rank(int rank) { state().rank = rank; }
void set_level(Level level) { state().level = level; }
void set_all_ranks(bool all_ranks) { state().all_ranks = all_ranks; }

bool enabled(Level level) {
  const State& s = state();
  if (level < s.level) return false;
  return level >= Level::kWarning || s.all_ranks || s.rank == 0;
}

void write(Level level, std::string_view tag, std::string_view message) {
  const std::time_t now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm local{};
  localtime_r(&now, &local);
  char clock[16];
  std::strftime(clock, sizeof(clock), "%H:%M:%S", &local);
  const std::string line = fmt::format("[{} r{}] [{}] {}{}\n", clock, state().rank, tag,
                                       level_label(level), message);
  std::FILE* stream = level >= Level::kWarning ? stderr : stdout;
  std::fwrite(line.data(), 1, line.size(), stream);
  std::fflush(stream);
}

}  // namespace foldtron::log
