// The text/labels reader (data/text): a vocabulary, a text file and its .labels, cut from the
// input at two NUL bytes. Any input gives aligned ids and labels, or a DataError.
#include <cstdint>
#include <string>

#include "data/text.hpp"
#include "data/tokens.hpp"
#include "fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string in(reinterpret_cast<const char*>(data), size);
  const size_t a = in.find('\0'), b = a == std::string::npos ? a : in.find('\0', a + 1);
  if (b == std::string::npos) return 0;
  const std::string vocab_path = fbt::fuzz::write_input("vocab.txt", data, a);
  const std::string text_path = fbt::fuzz::write_input("text.txt", data + a + 1, b - a - 1);
  fbt::fuzz::write_input("text.txt.labels", data + b + 1, size - b - 1);
  try {
    const fbt::Vocabulary vocab = fbt::Vocabulary::load(vocab_path);
    const auto ids = fbt::read_text_ids(text_path, vocab);
    const auto labels = fbt::read_text_labels(text_path, vocab, "_");
    if (ids.size() != labels.size()) __builtin_trap();
    for (int32_t id : ids)
      if (id < 0 || id >= vocab.size()) __builtin_trap();
  } catch (const fbt::DataError&) {
  }
  return 0;
}
