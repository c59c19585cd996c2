// metrics.jsonl: one JSON object a line ({"split": "train" | "valid" | "probe", "step": N, ...}),
// appended as a run goes, for plotting (fbt plot) and for tools of the user's own.
#pragma once
#include <cstdint>
#include <string>

namespace fbt {

class MetricsFile {
 public:
  explicit MetricsFile(std::string path) : path_(std::move(path)) {}
  const std::string& path() const { return path_; }
  void clear() const;                        // a new run starts with an empty file
  void append(const std::string& json_line) const;  // a failed write is an error
  void sync() const;  // to disk (with each checkpoint, so that a crash keeps the lines up to it)
  // Keeps the lines of steps <= step only (a resumed run writes again what came after); a line
  // cut short by a kill is dropped.
  void truncate_after(int64_t step) const;
  // Whether a whole line of this split and step is there (a resumed run at its last step: was
  // the final evaluation written before the stop?).
  bool holds(const std::string& split, int64_t step) const;

 private:
  std::string path_;
};

}  // namespace fbt
