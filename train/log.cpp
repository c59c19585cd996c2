#include "train/log.hpp"

#include <unistd.h>

#include <cstdio>

namespace fbt {

namespace {
LogSink* g_route = nullptr;  // null: stdout and stderr

void write_std(std::FILE* f, const std::string& text) {
  std::fwrite(text.data(), 1, text.size(), f);
  std::fflush(f);
}
}  // namespace

void log_out(const std::string& text) {
  if (g_route) g_route->out(text);
  else write_std(stdout, text);
}

void log_err(const std::string& text) {
  if (g_route) g_route->err(text);
  else write_std(stderr, text);
}

bool log_is_terminal() { return g_route ? g_route->terminal : ::isatty(STDOUT_FILENO) != 0; }

LogRoute::LogRoute(LogSink sink) : previous_(g_route), sink_(std::move(sink)) { g_route = &sink_; }

LogRoute::~LogRoute() { g_route = previous_; }

}  // namespace fbt
