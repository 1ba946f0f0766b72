# Writes OUTPUT, a C++ file defining foldtron::FUNCTION(), the (name, text) of every DIR/*.EXT
# sorted by name, declared in HEADER. Run at build time (cmake -P) so editing a file rebuilds
# the binary. Used for the presets (configs/*.yaml) and the hardware profiles
# (configs/hardware/*.json).
file(GLOB files "${DIR}/*.${EXT}")
list(SORT files)
set(body "")
foreach(path ${files})
  get_filename_component(name "${path}" NAME_WE)
  file(READ "${path}" text)
  string(APPEND body "      {\"${name}\", R\"foldtron_file(${text})foldtron_file\"},\n")
endforeach()
file(WRITE "${OUTPUT}.tmp"
"// Generated from ${DIR}/*.${EXT} by cmake/EmbedFiles.cmake. Do not edit.
#include \"${HEADER}\"

namespace foldtron {

const std::vector<std::pair<std::string, std::string>>& ${FUNCTION}() {
  static const std::vector<std::pair<std::string, std::string>> files{
${body}  };
  return files;
}

}  // namespace foldtron
")
file(COPY_FILE "${OUTPUT}.tmp" "${OUTPUT}" ONLY_IF_DIFFERENT)
