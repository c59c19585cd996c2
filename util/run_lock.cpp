#include "util/run_lock.hpp"

#include "util/check.hpp"

#include "util/files.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <stdexcept>

namespace fbt {

namespace {

std::string holder_line() {
  char host[256] = "unknown";
  ::gethostname(host, sizeof(host) - 1);
  char when[64];
  const std::time_t now = std::time(nullptr);
  std::strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S %Z", std::localtime(&now));
  return "pid " + std::to_string(::getpid()) + " on " + host + ", started " + when;
}

// The holder the lock file names, for the message: its first line, at most 200 bytes, control
// characters shown as '?' (a shared folder's lock file is not ours to trust).
std::string read_holder(int fd) {
  char buf[200];
  const ssize_t n = ::pread(fd, buf, sizeof(buf), 0);
  std::string text(buf, n > 0 ? size_t(n) : 0);
  text = text.substr(0, text.find('\n'));
  while (!text.empty() && text.back() == ' ') text.pop_back();
  return printable(text);
}

}  // namespace

RunLock::RunLock(const std::string& dir, const std::string& what) {
  const std::string path = (std::filesystem::path(dir) / kFile).string();
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) throw FileError(what + ": cannot open lock file " + path + ": " + std::strerror(errno));
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    const std::string holder = read_holder(fd_);
    ::close(fd_);
    fd_ = -1;
    if (err == EWOULDBLOCK)
      throw FileError(what + " is in use by another run (" + (holder.empty() ? "holder unknown" : holder) +
                               "); wait for it to end or choose another out_dir");
    throw FileError(what + ": cannot lock " + path + ": " + std::strerror(err));
  }
  const std::string line = holder_line() + "\n";
  if (::ftruncate(fd_, 0) != 0 || ::pwrite(fd_, line.data(), line.size(), 0) != ssize_t(line.size())) {
    const int err = errno;
    ::close(fd_);
    fd_ = -1;
    throw FileError(what + ": cannot write lock file " + path + ": " + std::strerror(err));
  }
}

RunLock::~RunLock() {
  if (fd_ >= 0) ::close(fd_);  // closing the last descriptor releases the flock
}

}  // namespace fbt
