// Shared by the libFuzzer targets: the input written to a file, for the readers that take paths.
// A target catches the error type its reader promises for bad input; anything else (another
// exception, a crash, a sanitizer report) is a finding.
#pragma once
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>

namespace fbt::fuzz {

// A per-process scratch file, rewritten with each input.
inline std::string write_input(const char* name, const uint8_t* data, size_t size) {
  const std::string path = "/tmp/fbt_fuzz_" + std::to_string(::getpid()) + "_" + name;
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) std::abort();
  if (size && std::fwrite(data, 1, size, f) != size) std::abort();
  std::fclose(f);
  return path;
}

}  // namespace fbt::fuzz
