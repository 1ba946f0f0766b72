// Files that tests write for the code under test to read.
#pragma once

#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

namespace foldtron::testing {

// Writes `bytes` to `path` exactly (binary; parent folders created) and returns the path.
inline std::string write_file(const std::filesystem::path& path, std::string_view bytes) {
  if (path.has_parent_path()) std::filesystem::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary | std::ios::trunc).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  return path.string();
}

}  // namespace foldtron::testing
