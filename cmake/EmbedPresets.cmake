# Writes OUTPUT, a C++ file defining foldtron::embedded_presets() from every PRESET_DIR/*.yaml.
# Run at build time (cmake -P) so editing a preset rebuilds the binary.
file(GLOB presets "${PRESET_DIR}/*.yaml")
list(SORT presets)
set(body "")
foreach(preset ${presets})
  get_filename_component(name "${preset}" NAME_WE)
  file(READ "${preset}" text)
  string(APPEND body "      {\"${name}\", R\"foldtron_yaml(${text})foldtron_yaml\"},\n")
endforeach()
file(WRITE "${OUTPUT}.tmp"
"// Generated from configs/*.yaml by cmake/EmbedPresets.cmake. Do not edit.
#include \"config/presets.h\"

namespace foldtron {

const std::vector<std::pair<std::string, std::string>>& embedded_presets() {
  static const std::vector<std::pair<std::string, std::string>> presets{
${body}  };
  return presets;
}

}  // namespace foldtron
")
file(COPY_FILE "${OUTPUT}.tmp" "${OUTPUT}" ONLY_IF_DIFFERENT)
