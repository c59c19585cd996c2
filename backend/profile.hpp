// Where a training step's time goes, op by op: `fbt bench --profile`. Scopes measure wall time
// on the thread that opens them (the OpenMP work inside a kernel is part of its scope) and nest:
// a scope's own time excludes the scopes opened inside it, so the rows add up to the time
// covered. Off by default; a closed profile costs one branch per scope.
#pragma once
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace fbt::profile {

enum class Phase { Forward, Backward, Optimizer };
const char* phase_name(Phase p);

struct Row {
  std::string op;
  Phase phase;
  double seconds = 0;  // own time: nested scopes excluded
  int64_t calls = 0;
};

// Starts collecting (clears earlier rows). sync: wait for the device at every scope's end, so a
// GPU op's time is its kernels' and not only their launch.
void start(bool sync_device = false);
// Stops collecting; the rows, longest first.
std::vector<Row> stop();
bool active();

class Scope {
 public:
  // op: a string literal (rows are keyed by its address, merged by text at stop()).
  Scope(const char* op, Phase phase) : op_(active() ? op : nullptr), phase_(phase) {
    if (op_) open();
  }
  ~Scope() {
    if (op_) close();
  }
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;

 private:
  void open();
  void close();
  const char* op_;
  Phase phase_;
  Scope* parent_ = nullptr;
  double nested_ = 0;  // seconds spent in scopes opened inside this one
  std::chrono::steady_clock::time_point t0_;
};

}  // namespace fbt::profile
