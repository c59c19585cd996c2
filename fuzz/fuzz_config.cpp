// The run-config reader (train/config): YAML, then `--set` overrides, one a line after a line
// "#--set". Any input gives a RunConfig or a ConfigError.
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include "fuzz_common.hpp"
#include "train/config.hpp"
#include "util/config_section.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  const size_t cut = text.find("\n#--set\n");
  std::vector<std::string> overrides;
  if (cut != std::string::npos) {
    std::istringstream lines(text.substr(cut + 8));
    for (std::string line; std::getline(lines, line);) overrides.push_back(line);
  }
  const std::string path = fbt::fuzz::write_input("config.yaml", data, cut == std::string::npos ? size : cut);
  try {
    const fbt::RunConfig c = fbt::load_run_config(path, overrides);
    (void)fbt::run_config_yaml(c);
  } catch (const fbt::ConfigError&) {
  }
  return 0;
}
