// An exclusive lock on a run's out_dir, so two runs can never write one directory: an flock'd
// file the kernel releases when the holder exits or is killed (a lock is never stale). The file
// names its holder (pid, host, start time) for the error a second run gets.
#pragma once
#include <string>

namespace fbt {

class RunLock {
 public:
  // Takes the lock on dir/.fbt-lock or throws naming the holder. `what` names the directory in
  // the error ("train.out_dir runs/x").
  RunLock(const std::string& dir, const std::string& what);
  ~RunLock();
  RunLock(const RunLock&) = delete;
  RunLock& operator=(const RunLock&) = delete;

  static constexpr const char* kFile = ".fbt-lock";

 private:
  int fd_ = -1;
};

}  // namespace fbt
