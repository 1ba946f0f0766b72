// Formatting of the typed errors declared in errors.h.
#include "core/errors.h"

#include <fmt/format.h>

namespace foldtron {
namespace {

// "field: message", unless the message already starts with the field's name.
std::string format_problem(const ConfigProblem& p) {
  if (p.field.empty() || p.message.rfind(p.field, 0) == 0) return p.message;
  return fmt::format("{}: {}", p.field, p.message);
}

std::string format_problems(const std::vector<ConfigProblem>& problems) {
  if (problems.size() == 1) return format_problem(problems.front());
  std::string out = fmt::format("{} problems in the configuration:", problems.size());
  for (const ConfigProblem& p : problems) {
    out += fmt::format("\n  - {}", format_problem(p));
    if (!p.hint.empty()) out += fmt::format("\n      hint: {}", p.hint);
  }
  return out;
}

}  // namespace

ConfigError::ConfigError(std::vector<ConfigProblem> problems)
    : Error(format_problems(problems), problems.size() == 1 ? problems.front().hint : ""),
      problems_(std::move(problems)) {}

void throw_internal(const char* file, int line, const char* condition,
                    const std::string& message) {
  throw InternalError(fmt::format("{}:{}: check '{}' failed: {}", file, line, condition, message));
}

}  // namespace foldtron
