#include "train/metrics.hpp"

#include <fstream>
#include <nlohmann/json.hpp>

#include "util/files.hpp"

namespace fbt {

void MetricsFile::clear() const { write_text_atomic(path_, ""); }

void MetricsFile::append(const std::string& json_line) const { append_file(path_, json_line + "\n"); }

void MetricsFile::sync() const { fsync_path(path_); }

namespace {
// Calls f(line, record) on each line of path in order until f returns true; a line that is not
// JSON or whose fields f cannot read (a line cut short by a kill) is skipped. Returns whether f did.
template <typename F>
bool find_record(const std::string& path, F f) {
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    try {
      if (f(line, nlohmann::json::parse(line))) return true;
    } catch (const std::exception&) {
    }
  }
  return false;
}
}  // namespace

void MetricsFile::truncate_after(int64_t step) const {
  if (!std::ifstream(path_)) return;
  std::string kept;
  find_record(path_, [&](const std::string& line, const nlohmann::json& j) {
    if (j.value("step", int64_t(0)) <= step) kept += line + "\n";
    return false;
  });
  write_text_atomic(path_, kept);
}

bool MetricsFile::holds(const std::string& split, int64_t step) const {
  return find_record(path_, [&](const std::string&, const nlohmann::json& j) {
    return j.value("split", "") == split && j.value("step", int64_t(-1)) == step;
  });
}

}  // namespace fbt
