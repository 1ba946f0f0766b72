// Rank-aware logging with [tag] prefixes. By default only world rank 0 prints info and debug
// lines; warnings and errors print on every rank, prefixed with the rank. The process-wide state
// is just (rank, level, all-ranks), set once by the CLI after MPI starts.
//
//   log::info("topology", "world {} with tp {}", world, tp);
//   -> [13:40:01 r0] [topology] world 8 with tp 2
#pragma once

#include <string>
#include <string_view>

#include <fmt/format.h>

namespace foldtron::log {

enum class Level { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

// Parses "debug", "info", "warning", "error"; throws UsageError naming the valid levels.
Level parse_level(std::string_view name);

void set_rank(int rank);
void set_level(Level level);
void set_all_ranks(bool all_ranks);  // info/debug from every rank, not just rank 0
bool enabled(Level level);

void write(Level level, std::string_view tag, std::string_view message);

template <typename... Args>
void debug(std::string_view tag, fmt::format_string<Args...> format, Args&&... args) {
  if (enabled(Level::kDebug)) write(Level::kDebug, tag, fmt::format(format, std::forward<Args>(args)...));
}
template <typename... Args>
void info(std::string_view tag, fmt::format_string<Args...> format, Args&&... args) {
  if (enabled(Level::kInfo)) write(Level::kInfo, tag, fmt::format(format, std::forward<Args>(args)...));
}
template <typename... Args>
void warning(std::string_view tag, fmt::format_string<Args...> format, Args&&... args) {
  if (enabled(Level::kWarning)) write(Level::kWarning, tag, fmt::format(format, std::forward<Args>(args)...));
}
template <typename... Args>
void error(std::string_view tag, fmt::format_string<Args...> format, Args&&... args) {
  write(Level::kError, tag, fmt::format(format, std::forward<Args>(args)...));
}

}  // namespace foldtron::log
