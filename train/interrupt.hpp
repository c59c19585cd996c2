// Ctrl-C / SIGTERM while training: the step in flight finishes, the trainer checkpoints and
// stops. A second signal exits at once (the newest complete checkpoint is still there).
#pragma once

namespace fbt {

// Catches SIGINT and SIGTERM while it lives (the previous handlers come back after).
class StopRequests {
 public:
  StopRequests();
  ~StopRequests();
  StopRequests(const StopRequests&) = delete;
  StopRequests& operator=(const StopRequests&) = delete;
  bool requested() const;

 private:
  void (*old_int_)(int);
  void (*old_term_)(int);
};

// Asks the training in progress to stop as Ctrl-C does (its step finishes, a checkpoint is
// written): for a caller's hook (the Python module's callback when it raises).
void request_stop();

}  // namespace fbt
