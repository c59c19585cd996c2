#include "util/config_section.hpp"

#include <fstream>

namespace fbt {

ConfigSection::ConfigSection(const YAML::Node& node, std::string file, std::string name)
    : node_(node), file_(std::move(file)), name_(std::move(name)) {
  if (node_ && !node_.IsNull() && !node_.IsMap())
    throw ConfigError(where("") + ": expected a mapping of keys to values");
}

bool ConfigSection::has(const std::string& key) const { return node_ && node_[key] && !node_[key].IsNull(); }

ConfigSection ConfigSection::section(const std::string& key) {
  read_.insert(key);
  YAML::Node sub = node_ ? node_[key] : YAML::Node();
  return ConfigSection(sub, file_, name_.empty() ? key : name_ + "." + key);
}

std::string ConfigSection::where(const std::string& key) const {
  std::string loc = file_;
  YAML::Node at = (node_ && !key.empty() && node_[key]) ? node_[key] : node_;
  if (at && at.Mark().line >= 0) loc += ":" + std::to_string(at.Mark().line + 1);
  std::string path = name_;
  if (!key.empty()) path += (path.empty() ? "" : ".") + key;
  return loc + ": " + path;
}

void ConfigSection::fail(const std::string& key, const std::string& msg) const {
  throw ConfigError(where(key) + ": " + msg);
}

void ConfigSection::finish() const {
  if (!node_ || node_.IsNull()) return;
  for (const auto& kv : node_) {
    const std::string k = kv.first.Scalar();
    if (!read_.count(k)) {
      std::string loc = file_;
      if (kv.first.Mark().line >= 0) loc += ":" + std::to_string(kv.first.Mark().line + 1);
      throw ConfigError(loc + ": " + (name_.empty() ? "" : name_ + ".") + k + ": unknown key");
    }
  }
}

YAML::Node load_yaml_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw ConfigError(path + ": cannot open the config file");
  try {
    return YAML::Load(in);
  } catch (const YAML::Exception& e) {
    throw ConfigError(path + ":" + std::to_string(e.mark.line + 1) + ": YAML syntax error: " + e.msg);
  }
}

void apply_override(YAML::Node& root, const std::string& assignment) {
  const size_t eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0)
    throw ConfigError("--set " + assignment + ": expected section.key=value");
  const std::string path = assignment.substr(0, eq), value = assignment.substr(eq + 1);
  std::vector<std::string> parts;
  for (size_t start = 0;;) {
    size_t dot = path.find('.', start);
    parts.push_back(path.substr(start, dot - start));
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  // Walk by reassignment: yaml-cpp nodes are handles, and operator[] creates missing maps.
  std::vector<YAML::Node> chain{root};
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    YAML::Node next = chain.back()[parts[i]];
    if (next.IsDefined() && !next.IsNull() && !next.IsMap())
      throw ConfigError("--set " + assignment + ": " + parts[i] + " is not a section");
    chain.push_back(next);
  }
  try {
    chain.back()[parts.back()] = YAML::Load(value);
  } catch (const YAML::Exception& e) {
    throw ConfigError("--set " + assignment + ": cannot parse the value: " + e.msg);
  }
}

}  // namespace fbt
