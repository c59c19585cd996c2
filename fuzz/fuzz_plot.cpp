// The plot path (cli/plot): JSONL files read and the gnuplot script written, without running
// gnuplot. The input, cut at NUL bytes, is a run folder name and two .jsonl files (two runs, so
// the folder names reach the script too). Any input gives an inert script (tests/gnuplot_inert.hpp:
// its strings only as single-quoted literals, every line one of fbt's commands) or an error that
// names the file and line (std::runtime_error); anything else is a finding.
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "cli/plot.hpp"
#include "tests/gnuplot_inert.hpp"

namespace fs = std::filesystem;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string in(reinterpret_cast<const char*>(data), size);
  std::vector<std::string> parts;
  for (size_t start = 0;;) {
    const size_t end = in.find('\0', start);
    parts.push_back(in.substr(start, end == std::string::npos ? std::string::npos : end - start));
    if (end == std::string::npos || parts.size() == 3) break;
    start = end + 1;
  }
  if (parts.size() < 3) return 0;
  std::string name = parts[0].substr(0, 100);  // a folder name: no '/', not . or ..
  for (char& ch : name)
    if (ch == '/') ch = '_';
  const fs::path root = fs::temp_directory_path() / ("fbt_fuzz_plot_" + std::to_string(::getpid()));
  fs::remove_all(root);
  std::vector<std::string> files;
  for (int k = 0; k < 2; ++k) {
    const fs::path run = root / ("r" + name + (k ? " B" : " A"));
    fs::create_directories(run);
    files.push_back((run / "metrics.jsonl").string());
    std::ofstream(files.back(), std::ios::binary) << parts[size_t(1 + k)];
  }
  fs::create_directories(root / "data");
  try {
    std::vector<std::string> charts;
    const std::string script = fbt::gnuplot_script(files, (root / "data").string(), charts);
    std::string why;
    if (!fbt::testing::gnuplot_script_is_inert(script, why)) {
      std::fprintf(stderr, "a script that could run something: %s\n", why.c_str());
      __builtin_trap();
    }
  } catch (const std::runtime_error&) {
  }
  return 0;
}
