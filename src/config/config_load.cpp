// Strict YAML loading and composition of configs (see config_load.h).
#include "config/config_load.h"

#include <optional>
#include <set>
#include <sstream>
#include <type_traits>
#include <unordered_map>
#include <utility>

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include "config/presets.h"
#include "core/errors.h"
#include "core/files.h"
#include "core/text.h"

namespace foldtron {
namespace {

// ---- parsing YAML text ----

// Every key in `node` (from `source`) is a name, once per mapping, and nesting (aliases included,
// which may form a cycle) stops at a config's depth: ConfigError naming the place otherwise.
void check_keys(const YAML::Node& node, const std::string& source, int depth = 0) {
  constexpr int kMaxDepth = 16;  // a config nests 2 levels (section, key) and a few more in values
  if (!node.IsMap() && !node.IsSequence()) return;
  if (depth > kMaxDepth) {
    throw ConfigError(source, fmt::format("line {}: values nest more than {} levels deep", node.Mark().line + 1, kMaxDepth),
                      "a config is sections of 'key: value' lines; check the indentation and any YAML aliases (*name)");
  }
  std::unordered_map<std::string, int> first_line;  // a mapping's keys (yaml-cpp keeps repeated ones)
  for (const auto& item : node) {
    if (node.IsSequence()) {
      check_keys(item, source, depth + 1);
      continue;
    }
    if (!item.first.IsScalar()) {
      throw ConfigError(source,
                        fmt::format("the key at line {}, column {} is {}, not a name", item.first.Mark().line + 1,
                                    item.first.Mark().column + 1,
                                    item.first.IsMap() ? "a mapping" : item.first.IsSequence() ? "a sequence" : "empty"),
                        "write each key as a plain name followed by ':' (YAML's '? ' complex keys are not config keys)");
    }
    const auto [seen, added] = first_line.emplace(item.first.Scalar(), item.first.Mark().line + 1);
    if (!added) {
      throw ConfigError(source,
                        fmt::format("the key '{}' appears twice in one mapping, at lines {} and {}", item.first.Scalar(),
                                    seen->second, item.first.Mark().line + 1),
                        "keep one of them: YAML keys are unique, and which one would count is not clear");
    }
    check_keys(item.second, source, depth + 1);
  }
}

YAML::Node parse_yaml(const std::string& text, const std::string& source) {
  try {
    YAML::Node root = YAML::Load(text);
    if (root.IsNull()) return YAML::Node(YAML::NodeType::Map);
    if (!root.IsMap()) {
      throw ConfigError(source, "the top level must be a mapping of sections (model:, parallel:, ...)",
                        "start the file with a section name such as 'model:'");
    }
    check_keys(root, source);
    return root;
  } catch (const YAML::ParserException& e) {
    throw ConfigError(source,
                      fmt::format("invalid YAML at line {}, column {}: {}", e.mark.line + 1,
                                  e.mark.column + 1, e.msg),
                      "check indentation (spaces, not tabs) and that every key ends with ':'");
  }
}

std::string read_file(const std::string& path) {
  std::optional<std::string> text = read_whole_file(path);
  if (!text) {
    throw ConfigError("--config", fmt::format("cannot open config file '{}'", path),
                      "check the path; presets are chosen with --preset NAME instead");
  }
  return std::move(*text);
}

// Deep merge: maps merge key by key, anything else in `top` replaces `base` (keys are names:
// parse_yaml checked them). The base's entries are indexed first: yaml-cpp finds a map's key by
// walking its entries, which made a file of many keys quadratic to merge.
void merge_into(YAML::Node base, const YAML::Node& top) {
  std::unordered_map<std::string, YAML::Node> entries;  // key -> a handle on base's value
  for (const auto& item : base) entries.emplace(item.first.Scalar(), item.second);
  for (const auto& item : top) {
    const std::string key = item.first.Scalar();
    const auto found = entries.find(key);
    if (found == entries.end()) {
      YAML::Node value = YAML::Clone(item.second);
      base.force_insert(key, value);  // known absent: no walk to look for it
      entries.emplace(key, value);
    } else if (item.second.IsMap() && found->second.IsMap()) {
      merge_into(found->second, item.second);
    } else {
      YAML::Node slot = found->second;  // a copy: assigning repoints the handle it goes through
      slot = YAML::Clone(item.second);  // base's value changes
    }
  }
}

void apply_override(YAML::Node root, const std::string& assignment) {
  const size_t eq = assignment.find('=');
  const std::string path = assignment.substr(0, eq);
  const size_t dot = path.find('.');
  if (eq == std::string::npos || dot == std::string::npos || dot == 0 || dot + 1 == path.size()) {
    throw UsageError(fmt::format("--set '{}' is not of the form section.key=value", assignment),
                     "for example: --set model.num_layers=4 --set parallel.order=tp-cp-ep-dp-pp");
  }
  const std::string section = path.substr(0, dot);
  const std::string key = path.substr(dot + 1);
  YAML::Node value = parse_yaml("v: " + assignment.substr(eq + 1), "--set " + path)["v"];
  if (!root[section] || !root[section].IsMap()) root[section] = YAML::Node(YAML::NodeType::Map);
  root[section][key] = value;
}

// ---- reading typed values ----

std::string scalar_text(const YAML::Node& node) {
  if (node.IsScalar()) return node.Scalar();
  std::stringstream out;
  out << node;
  return out.str();
}

// A Reader visits a Config and fills it from a YAML tree, recording problems.
class Reader {
 public:
  Reader(const YAML::Node& root, std::vector<ConfigProblem>& problems)
      : root_(root), problems_(problems) {}

  template <typename Section>
  void section(const char* name, Section& section) {
    section_names_.push_back(name);
    const YAML::Node node = root_[name];
    if (!node || node.IsNull()) return;
    if (!node.IsMap()) {
      problems_.push_back({name, fmt::format("must be a mapping of keys, got '{}'", scalar_text(node)),
                           fmt::format("write '{}:' followed by indented 'key: value' lines", name)});
      return;
    }
    section_ = name;
    node_.reset(node);  // rebind the handle (operator= would overwrite the node it refers to)
    keys_.clear();
    section.visit(*this);
    for (const auto& item : node) {
      const std::string key = item.first.as<std::string>();
      if (std::find(keys_.begin(), keys_.end(), key) == keys_.end()) {
        problems_.push_back({fmt::format("{}.{}", name, key), "unknown key",
                             fmt::format("{} (`foldtron config --keys` lists every key)", suggest(key, keys_))});
      }
    }
  }

  template <typename T>
  void operator()(const char* key, T& value, const char* /*doc*/) {
    keys_.push_back(key);
    const YAML::Node node = static_cast<const YAML::Node&>(node_)[key];  // const: no insertion
    if (!node) return;
    const std::string field = fmt::format("{}.{}", section_, key);
    if (node.IsNull()) {
      problems_.push_back({field, "has no value", "give a value after the colon, or remove the key"});
      return;
    }
    read(field, node, value);
  }

  // Top-level keys that are not sections.
  void check_sections() {
    for (const auto& item : root_) {
      const std::string name = item.first.as<std::string>();
      if (std::find(section_names_.begin(), section_names_.end(), name) == section_names_.end()) {
        problems_.push_back({name, "unknown section", suggest(name, section_names_)});
      }
    }
  }

 private:
  void type_problem(const std::string& field, const YAML::Node& node, const char* expected,
                    const std::string& hint) {
    problems_.push_back({field, fmt::format("expected {}, got '{}'", expected, scalar_text(node)), hint});
  }

  void read(const std::string& field, const YAML::Node& node, int64_t& value) {
    try {
      if (node.IsScalar()) {
        value = node.as<int64_t>();
        return;
      }
    } catch (const YAML::Exception&) {
    }
    type_problem(field, node, "an integer", "write a whole number such as 4096");
  }
  void read(const std::string& field, const YAML::Node& node, double& value) {
    try {
      if (node.IsScalar()) {
        value = node.as<double>();
        return;
      }
    } catch (const YAML::Exception&) {
    }
    type_problem(field, node, "a number", "write a number such as 0.01 or 1e6");
  }
  void read(const std::string& field, const YAML::Node& node, bool& value) {
    try {
      if (node.IsScalar()) {
        value = node.as<bool>();
        return;
      }
    } catch (const YAML::Exception&) {
    }
    type_problem(field, node, "true or false", "write true or false");
  }
  void read(const std::string& field, const YAML::Node& node, std::string& value) {
    if (node.IsScalar()) {
      value = node.Scalar();
      return;
    }
    type_problem(field, node, "a string", "write a single value, quoted if it contains ':' or '#'");
  }
  void read(const std::string& field, const YAML::Node& node, std::vector<int64_t>& value) {
    std::vector<int64_t> parsed;
    bool ok = node.IsSequence();
    if (ok) {
      for (const auto& element : node) {
        try {
          parsed.push_back(element.as<int64_t>());
        } catch (const YAML::Exception&) {
          ok = false;
        }
      }
    }
    if (!ok) {
      type_problem(field, node, "a list of integers", "write a list such as [0, 1] (or [] for none)");
      return;
    }
    value = parsed;
  }
  template <typename E, typename = std::enable_if_t<std::is_enum_v<E>>>
  void read(const std::string& field, const YAML::Node& node, E& value) {
    const std::vector<std::string>& names = enum_names<E>();
    if (node.IsScalar()) {
      for (size_t i = 0; i < names.size(); ++i) {
        if (names[i] == node.Scalar()) {
          value = static_cast<E>(i);
          return;
        }
      }
    }
    const std::string close = node.IsScalar() ? closest_match(node.Scalar(), names) : "";
    problems_.push_back({field, fmt::format("'{}' is not one of: {}", scalar_text(node), join(names, ", ")),
                         close.empty() ? fmt::format("use one of: {}", join(names, ", "))
                                       : fmt::format("did you mean '{}'?", close)});
  }

  const YAML::Node root_;
  std::vector<ConfigProblem>& problems_;
  std::vector<std::string> section_names_;
  std::string section_;
  YAML::Node node_;
  std::vector<std::string> keys_;
};

// ---- writing ----

std::string format_value(int64_t value) { return std::to_string(value); }
std::string format_value(bool value) { return value ? "true" : "false"; }
std::string format_value(double value) {
  std::string text = fmt::format("{}", value);
  // Keep it a YAML float (and readable): 1e+06 and 10000 both parse, but 0.0 stays 0.0.
  if (text.find_first_of(".en") == std::string::npos) text += ".0";
  return text;
}
std::string format_value(const std::string& value) {
  std::string quoted = "\"";
  for (char c : value) {
    if (c == '"' || c == '\\') quoted += '\\';
    quoted += c;
  }
  return quoted + "\"";
}
std::string format_value(const std::vector<int64_t>& value) {
  std::vector<std::string> parts;
  for (int64_t v : value) parts.push_back(std::to_string(v));
  return "[" + join(parts, ", ") + "]";
}
template <typename E, typename = std::enable_if_t<std::is_enum_v<E>>>
std::string format_value(E value) {
  return enum_name(value);
}

const char* type_name(int64_t) { return "int"; }
const char* type_name(double) { return "float"; }
const char* type_name(bool) { return "bool"; }
const char* type_name(const std::string&) { return "string"; }
const char* type_name(const std::vector<int64_t>&) { return "int list"; }
template <typename E, typename = std::enable_if_t<std::is_enum_v<E>>>
std::string type_name(E) {
  return join(enum_names<E>(), "|");
}

class Writer {
 public:
  template <typename Section>
  void section(const char* name, Section& section) {
    out_ += fmt::format("{}:\n", name);
    section.visit(*this);
  }
  template <typename T>
  void operator()(const char* key, T& value, const char* doc) {
    const std::string line = fmt::format("  {}: {}", key, format_value(value));
    out_ += fmt::format("{:<48} # {}\n", line, doc);
  }
  std::string out_;
};

class KeyLister {
 public:
  template <typename Section>
  void section(const char* name, Section& section) {
    section_ = name;
    section.visit(*this);
  }
  template <typename T>
  void operator()(const char* key, T& value, const char* doc) {
    out_ += fmt::format("{:<40} {:<12} default {:<20} {}\n", section_ + "." + key,
                        std::string(type_name(value)).substr(0, 12), format_value(value), doc);
  }
  std::string section_;
  std::string out_;
};

}  // namespace

std::vector<std::string> preset_names() {
  std::vector<std::string> names;
  for (const auto& [name, text] : embedded_presets()) names.push_back(name);
  return names;
}

const std::string& preset_yaml(const std::string& name) {
  for (const auto& [preset, text] : embedded_presets()) {
    if (preset == name) return text;
  }
  throw ConfigError("--preset", fmt::format("unknown preset '{}'", name), suggest(name, preset_names()));
}

Config load_config(const ConfigSources& sources, const std::string& base_yaml) {
  YAML::Node root(YAML::NodeType::Map);
  const auto merge = [&root](const std::string& text, const std::string& source) {
    merge_into(root, parse_yaml(text, source));
  };
  if (!base_yaml.empty()) merge(base_yaml, "the imported model config");
  if (!sources.preset.empty()) merge(preset_yaml(sources.preset), "preset " + sources.preset);
  if (!sources.config_file.empty()) merge(read_file(sources.config_file), sources.config_file);
  for (const std::string& assignment : sources.overrides) apply_override(root, assignment);

  Config config;
  std::vector<ConfigProblem> problems;
  Reader reader(root, problems);
  config.visit(reader);
  reader.check_sections();
  if (!problems.empty()) throw ConfigError(std::move(problems));
  return config;
}

std::string config_to_yaml(const Config& config) {
  Writer writer;
  Config copy = config;  // visit() is non-const: it also serves the reader
  copy.visit(writer);
  return writer.out_;
}

std::string describe_config_keys() {
  KeyLister lister;
  Config defaults;
  defaults.visit(lister);
  return lister.out_;
}

}  // namespace foldtron
