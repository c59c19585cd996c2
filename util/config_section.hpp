// Reads one YAML mapping (a config section) into typed fields, with errors that name the file,
// the line, the key and the problem. Keys never read are reported by finish() as unknown.
// Parsing happens once, into plain structs; nothing looks up strings after that.
#pragma once
#include <yaml-cpp/yaml.h>

#include <set>
#include <stdexcept>
#include <string>
#include <vector>

namespace fbt {

struct ConfigError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class ConfigSection {
 public:
  // node must be a mapping (or null: an empty section). name is the dotted prefix ("model").
  ConfigSection(const YAML::Node& node, std::string file, std::string name);

  bool has(const std::string& key) const;
  template <typename T>
  T get(const std::string& key, const T& fallback);
  template <typename T>
  T require(const std::string& key);
  // A nested mapping (for sections inside sections).
  ConfigSection section(const std::string& key);
  // Throws if the mapping holds a key no get/require asked for (a typo, a removed option).
  void finish() const;

  // "file:line:col: model.dim: msg"
  [[noreturn]] void fail(const std::string& key, const std::string& msg) const;
  std::string where(const std::string& key) const;

 private:
  template <typename T>
  T convert(const std::string& key, const YAML::Node& v) const;
  YAML::Node node_;
  std::string file_, name_;
  mutable std::set<std::string> read_;
};

template <typename T>
T ConfigSection::get(const std::string& key, const T& fallback) {
  read_.insert(key);
  if (!node_ || !node_[key] || node_[key].IsNull()) return fallback;
  return convert<T>(key, node_[key]);
}

template <typename T>
T ConfigSection::require(const std::string& key) {
  read_.insert(key);
  if (!node_ || !node_[key] || node_[key].IsNull()) fail(key, "required key is missing");
  return convert<T>(key, node_[key]);
}


template <typename T>
T ConfigSection::convert(const std::string& key, const YAML::Node& v) const {
  if (!v.IsScalar()) fail(key, "expected a single value, got a list or mapping");
  T out{};
  if constexpr (std::is_same_v<T, bool>) {
    const std::string s = v.Scalar();
    if (s == "true" || s == "True" || s == "yes") return true;
    if (s == "false" || s == "False" || s == "no") return false;
    fail(key, "expected true or false, got '" + s + "'");
  } else if constexpr (std::is_integral_v<T>) {
    const std::string s = v.Scalar();
    try {
      size_t used = 0;
      long long x = std::stoll(s, &used);
      if (used != s.size()) throw std::invalid_argument(s);
      out = T(x);
    } catch (const std::exception&) {
      fail(key, "expected an integer, got '" + s + "'");
    }
  } else if constexpr (std::is_floating_point_v<T>) {
    const std::string s = v.Scalar();
    try {
      size_t used = 0;
      double x = std::stod(s, &used);
      if (used != s.size()) throw std::invalid_argument(s);
      out = T(x);
    } catch (const std::exception&) {
      fail(key, "expected a number, got '" + s + "'");
    }
  } else {
    out = v.as<T>();
  }
  return out;
}

// Loads a YAML file (errors name the file and line) and applies "--set a.b=value" overrides.
YAML::Node load_yaml_file(const std::string& path);
void apply_override(YAML::Node& root, const std::string& assignment);

}  // namespace fbt
