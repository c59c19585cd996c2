// Writes that must not leave a half-written file behind (checkpoints, metrics, prepared data).
#pragma once
#include <cstddef>
#include <stdexcept>
#include <string>

namespace fbt {

// A failed operation on a file or directory (open, write, flush, rename, lock), its message
// naming the path and the system's reason. Python sees it as OSError.
struct FileError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Writes bytes to path atomically: a temporary file in the same directory, fsync, rename.
void write_file_atomic(const std::string& path, const void* data, size_t size);
inline void write_text_atomic(const std::string& path, const std::string& text) {
  write_file_atomic(path, text.data(), text.size());
}
// Removes what write_file_atomic leaves in dir when its process dies mid-write (files named
// NAME.tmp.PID). Only for a directory the caller owns (holds its lock): another writer's
// temporary file would go too.
void remove_stale_temporaries(const std::string& dir);
// The whole file; an unreadable one is an error naming it.
std::string read_file(const std::string& path);
// Appends text to path (created if missing); a failed write (a full disk, a size limit) is an
// error naming the file and the reason.
void append_file(const std::string& path, const std::string& text);
// Flushes a file or directory entry to disk (after a rename, so the rename itself survives a crash).
void fsync_path(const std::string& path);

}  // namespace fbt
