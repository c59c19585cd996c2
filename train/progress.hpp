// A one-line live progress bar with ETA, drawn only when the log goes to a terminal (train/log.hpp).
#pragma once
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

#include <fmt/core.h>

#include "train/log.hpp"

namespace fbt {

class Progress {
 public:
  Progress(std::string label, int64_t total, int64_t start = 0)
      : label_(std::move(label)), total_(total), start_(start), t0_(std::chrono::steady_clock::now()),
        enabled_(total > 0 && log_is_terminal()) {}  // total 0: nothing to show

  void update(int64_t done, const std::string& extra = "") {
    if (!enabled_) return;
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
    const double rate = done > start_ ? double(done - start_) / secs : 0;
    const double eta = rate > 0 ? double(total_ - done) / rate : 0;
    const int width = 30;
    const int fill = total_ ? int(double(width) * double(done) / double(total_)) : 0;
    log_out(fmt::format("\r{} [{}{}] {}/{} {:3.0f}% eta {} {}\x1b[K", label_, std::string(size_t(fill), '#'),
                        std::string(size_t(width - fill), '.'), done, total_,
                        total_ ? 100.0 * double(done) / double(total_) : 0.0, clock(eta), extra));
    drawn_ = true;
  }
  // Erases the bar so a log line can be printed in its place.
  void clear() {
    if (enabled_ && drawn_) {
      log_out("\r\x1b[K");
      drawn_ = false;
    }
  }
  ~Progress() { clear(); }

  static std::string clock(double secs) {
    const int64_t s = int64_t(secs + 0.5);
    return s >= 3600 ? fmt::format("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60) : fmt::format("{}:{:02}", s / 60, s % 60);
  }

 private:
  std::string label_;
  int64_t total_, start_;
  std::chrono::steady_clock::time_point t0_;
  bool enabled_, drawn_ = false;
};

}  // namespace fbt
