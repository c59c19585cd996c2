#include "backend/profile.hpp"

#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>

#include "backend/cuda/kernels.hpp"

namespace fbt::profile {
namespace {
struct State {
  std::atomic<bool> active{false};
  bool sync = false;
  std::mutex mutex;                       // scopes may close on several threads (parallel streams)
  std::vector<Row> rows;                  // keyed by (op address, phase) while collecting
  std::vector<const char*> keys;          // rows[i]'s op literal
};
State& state() {
  static State s;
  return s;
}
thread_local Scope* t_open = nullptr;  // innermost open scope of this thread
}  // namespace

const char* phase_name(Phase p) {
  switch (p) {
    case Phase::Forward: return "forward";
    case Phase::Backward: return "backward";
    case Phase::Optimizer: return "optimizer";
  }
  return "?";
}

bool active() { return state().active; }

void start(bool sync_device) {
  State& s = state();
  const std::lock_guard<std::mutex> lock(s.mutex);
  s.rows.clear(), s.keys.clear();
  s.active = true;
  s.sync = sync_device;
}

std::vector<Row> stop() {
  State& s = state();
  const std::lock_guard<std::mutex> lock(s.mutex);
  s.active = false;
  std::map<std::pair<std::string, int>, Row> merged;  // equal texts at different addresses
  for (const Row& r : s.rows) {
    Row& m = merged[{r.op, int(r.phase)}];
    m.op = r.op, m.phase = r.phase;
    m.seconds += r.seconds, m.calls += r.calls;
  }
  std::vector<Row> out;
  for (auto& [key, r] : merged) out.push_back(r);
  std::sort(out.begin(), out.end(), [](const Row& a, const Row& b) { return a.seconds > b.seconds; });
  s.rows.clear(), s.keys.clear();
  return out;
}

void Scope::open() {
  parent_ = t_open;
  t_open = this;
  if (state().sync) cuda::synchronize();  // work queued before the scope is not its own
  t0_ = std::chrono::steady_clock::now();
}

void Scope::close() {
  State& s = state();
  if (s.sync) cuda::synchronize();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
  t_open = parent_;
  if (parent_) parent_->nested_ += secs;
  const std::lock_guard<std::mutex> lock(s.mutex);
  size_t i = 0;
  while (i < s.keys.size() && !(s.keys[i] == op_ && s.rows[i].phase == phase_)) ++i;
  if (i == s.keys.size()) {
    s.keys.push_back(op_);
    s.rows.push_back(Row{op_, phase_, 0, 0});
  }
  s.rows[i].seconds += secs - nested_;
  s.rows[i].calls += 1;
}

}  // namespace fbt::profile
