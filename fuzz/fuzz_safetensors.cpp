// The safetensors reader (util/safetensors): any bytes give a parsed file or a SafeTensorsError.
#include <cstdint>
#include <vector>

#include "util/safetensors.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const fbt::SafeTensors st = fbt::SafeTensors::parse(std::vector<uint8_t>(data, data + size), "fuzz");
    for (const auto& [name, t] : st.tensors)
      if (t.dtype == "F32") (void)t.to_f32(name);
    (void)st.serialize();  // what parses must write back
  } catch (const fbt::SafeTensorsError&) {
  }
  return 0;
}
