#include "train/metrics.hpp"

#include <fstream>
#include <nlohmann/json.hpp>

#include "util/files.hpp"

namespace fbt {

void MetricsFile::clear() const { write_text_atomic(path_, ""); }

void MetricsFile::append(const std::string& json_line) const { append_file(path_, json_line + "\n"); }

void MetricsFile::sync() const { fsync_path(path_); }

void MetricsFile::truncate_after(int64_t step) const {
  std::ifstream in(path_);
  if (!in) return;
  std::string line, kept;
  while (std::getline(in, line)) {
    try {
      if (nlohmann::json::parse(line).value("step", int64_t(0)) <= step) kept += line + "\n";
    } catch (const std::exception&) {  // a line cut by a kill: drop it
    }
  }
  write_text_atomic(path_, kept);
}

bool MetricsFile::holds(const std::string& split, int64_t step) const {
  std::ifstream in(path_);
  std::string line;
  while (std::getline(in, line)) {
    try {
      const auto j = nlohmann::json::parse(line);
      if (j.value("split", "") == split && j.value("step", int64_t(-1)) == step) return true;
    } catch (const std::exception&) {  // a line cut by a kill
    }
  }
  return false;
}

}  // namespace fbt
