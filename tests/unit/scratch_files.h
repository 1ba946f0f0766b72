// Files that tests write for the code under test to read.
#pragma once

#include <unistd.h>

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

// `name` in a scratch folder of this process for `tag` (created): temp/foldtron_TAG_PID/NAME.
inline std::string scratch_path(const std::string& tag, const std::string& name) {
  const auto dir = std::filesystem::temp_directory_path() / ("foldtron_" + tag + "_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  return (dir / name).string();
}

}  // namespace foldtron::testing
