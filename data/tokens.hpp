// Token corpora, memory-mapped: `bytes` (every byte a token), `u16`/`u32` (raw little-endian ids,
// nanoGPT's train.bin) and `llmc` (llm.c shards: 256 x int32 header, magic 20240520 v1 = uint16,
// 20240801 v7 = uint32, header[2] = token count, size checked). A path may be a glob of shards,
// read in sorted order as one sequence. Every id is checked against num_tokens at load.
#pragma once
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace fbt {

struct DataError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class TokenFile {
 public:
  TokenFile(const std::string& path, const std::string& format);
  ~TokenFile();
  TokenFile(const TokenFile&) = delete;
  TokenFile& operator=(const TokenFile&) = delete;

  int64_t size() const { return count_; }
  int32_t operator[](int64_t i) const {
    const uint8_t* p = base_ + offset_ + i * width_;
    switch (width_) {
      case 1: return p[0];
      case 2: return int32_t(p[0] | (p[1] << 8));
      default: return int32_t(uint32_t(p[0]) | (uint32_t(p[1]) << 8) | (uint32_t(p[2]) << 16) | (uint32_t(p[3]) << 24));
    }
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  const uint8_t* base_ = nullptr;
  size_t mapped_ = 0;
  int64_t offset_ = 0, count_ = 0, width_ = 1;
};

// How a corpus is stored: a token format above, or `text` (data/text.hpp) with its vocabulary
// and, optionally, aligned labels.
struct CorpusFormat {
  std::string format = "bytes";  // bytes | u16 | u32 | llmc | text
  std::string vocab;             // text: the vocabulary file
  bool labels = false;           // text: targets are the labels of F.labels, not the next token
  std::string ignore_label = "_";
};

// One or more token files (a glob's matches, sorted) read as one sequence, or a text file.
class Corpus {
 public:
  Corpus(const std::string& path_or_glob, const std::string& format, int64_t num_tokens);
  Corpus(const std::string& path_or_glob, const CorpusFormat& format, int64_t num_tokens);
  int64_t size() const { return total_; }
  int32_t operator[](int64_t i) const;
  // Copies [begin, begin + n) into out.
  void read(int64_t begin, int64_t n, int32_t* out) const;
  const std::string& name() const { return name_; }
  // Labelled text: the target of position i is its label (-1: no loss), not the next token.
  bool labelled() const { return !labels_.empty(); }
  void read_labels(int64_t begin, int64_t n, int32_t* out) const;

 private:
  void open_token_files(const std::string& path_or_glob, const std::string& format, int64_t num_tokens);
  std::string name_;
  std::vector<std::unique_ptr<TokenFile>> files_;
  std::vector<int64_t> starts_;
  std::vector<int32_t> text_, labels_;  // text: the ids and labels in memory
  int64_t total_ = 0;
};

// The split into `streams` contiguous streams of equal length, and the TBPTT cursor over them:
// each step yields the next `bptt` inputs of every stream and the targets one token later (of a
// labelled corpus: the labels of the inputs).
class StreamBatcher {
 public:
  StreamBatcher(const Corpus& corpus, int64_t streams, int64_t bptt);
  // Fills inputs/targets (streams x n, row-major) and returns n (bptt, or less at the end of
  // a pass when allow_partial). Returns 0 at the end of a pass.
  int64_t next(int32_t* inputs, int32_t* targets, bool allow_partial);
  // Starts a new pass over the streams (the caller resets the streams' memory).
  void rewind() { cursor_ = 0; }
  int64_t cursor() const { return cursor_; }
  void set_cursor(int64_t c);
  int64_t stream_length() const { return length_; }
  // Positions of a stream that have a target: all of a labelled corpus's, all but the last else.
  int64_t positions() const { return corpus_.labelled() ? length_ : length_ - 1; }
  int64_t streams() const { return streams_; }

 private:
  const Corpus& corpus_;
  int64_t streams_, bptt_, length_, cursor_ = 0;
};

}  // namespace fbt
