// Small string helpers shared by the config parser and the CLI: close-match suggestions for
// misspelled keys and subcommands, joining, and splitting.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace foldtron {

// Levenshtein distance between two strings.
int edit_distance(std::string_view a, std::string_view b);

// The candidate closest to `word` if it is plausibly a misspelling of it, else "".
std::string closest_match(std::string_view word, const std::vector<std::string>& candidates);

// "did you mean 'x'?" or a list of the valid names when nothing is close.
std::string suggest(std::string_view word, const std::vector<std::string>& candidates);

std::string join(const std::vector<std::string>& parts, std::string_view separator);
// A tensor shape as "[2, 24, 320]".
std::string shape_text(const std::vector<int64_t>& shape);
std::vector<std::string> split(std::string_view text, char separator);

}  // namespace foldtron
