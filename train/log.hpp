// Where training and evaluation write their log: stdout and stderr, unless a caller routes it
// elsewhere for the length of a call (the Python module sends it through sys.stdout and
// sys.stderr, so notebooks and redirect_stdout see it). Progress bars redraw in place (\r, ESC[K)
// only when the destination is a terminal.
#pragma once
#include <functional>
#include <string>

namespace fbt {

struct LogSink {
  std::function<void(const std::string&)> out, err;  // text as it comes (lines end with '\n')
  bool terminal = false;
};

void log_out(const std::string& text);
void log_err(const std::string& text);
bool log_is_terminal();  // stdout's, or the routed sink's

// Routes the log to `sink` while it lives, then back to where it went before.
class LogRoute {
 public:
  explicit LogRoute(LogSink sink);
  ~LogRoute();
  LogRoute(const LogRoute&) = delete;
  LogRoute& operator=(const LogRoute&) = delete;

 private:
  LogSink* previous_;
  LogSink sink_;
};

}  // namespace fbt
