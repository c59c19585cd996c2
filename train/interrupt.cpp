#include "train/interrupt.hpp"

#include <csignal>
#include <cstdlib>

namespace fbt {

namespace {
volatile std::sig_atomic_t g_stop_requested = 0;
extern "C" void request_stop(int sig) {
  if (g_stop_requested) std::_Exit(128 + sig);
  g_stop_requested = 1;
}
}  // namespace

StopRequests::StopRequests() {
  g_stop_requested = 0;
  old_int_ = std::signal(SIGINT, request_stop);
  old_term_ = std::signal(SIGTERM, request_stop);
}

StopRequests::~StopRequests() {
  std::signal(SIGINT, old_int_);
  std::signal(SIGTERM, old_term_);
}

bool StopRequests::requested() const { return g_stop_requested != 0; }

void request_stop() { g_stop_requested = 1; }

}  // namespace fbt
