// The token-file readers (data/tokens): bytes, u16, u32 and llm.c shards with their headers. The
// first input byte picks the format and the vocabulary size; the rest is the file. Any file gives
// a corpus whose every id is below num_tokens, or a DataError.
#include <cstdint>
#include <string>

#include "data/tokens.hpp"
#include "fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  static const char* formats[] = {"bytes", "u16", "u32", "llmc"};
  const char* format = formats[data[0] % 4];
  const int64_t num_tokens = (data[0] & 0x80) ? 65536 : 256;
  const std::string path = fbt::fuzz::write_input("tokens.bin", data + 1, size - 1);
  try {
    const fbt::Corpus corpus(path, format, num_tokens);
    for (int64_t i = 0; i < corpus.size(); ++i)
      if (corpus[i] < 0 || corpus[i] >= num_tokens) __builtin_trap();
  } catch (const fbt::DataError&) {
  }
  return 0;
}
