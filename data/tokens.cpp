#include "data/tokens.hpp"

#include "data/text.hpp"

#include <fcntl.h>
#include <glob.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace fbt {

TokenFile::TokenFile(const std::string& path, const std::string& format) : path_(path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) throw DataError(path + ": cannot open: " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw DataError(path + ": not a regular file");
  }
  const size_t size = size_t(st.st_size);
  if (size > 0) {
    void* p = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      ::close(fd);
      throw DataError(path + ": cannot map: " + std::strerror(errno));
    }
    base_ = static_cast<const uint8_t*>(p);
    mapped_ = size;
  }
  ::close(fd);
  auto fail = [&](const std::string& msg) {
    if (base_) ::munmap(const_cast<uint8_t*>(base_), mapped_);
    base_ = nullptr;
    throw DataError(path + ": " + msg);
  };
  if (format == "bytes") {
    width_ = 1;
  } else if (format == "u16" || format == "u32") {
    width_ = format == "u16" ? 2 : 4;
    if (size % size_t(width_))
      fail("size " + std::to_string(size) + " bytes is not a multiple of " + std::to_string(width_) + " (" + format +
           " tokens)");
  } else if (format == "llmc") {
    if (size < 1024) fail("too short for an llm.c header (1024 bytes), size " + std::to_string(size));
    int32_t h[3];
    std::memcpy(h, base_, sizeof(h));
    if (h[0] == 20240520 && h[1] == 1) width_ = 2;
    else if (h[0] == 20240801 && h[1] == 7) width_ = 4;
    else
      fail("bad llm.c header: magic " + std::to_string(h[0]) + " version " + std::to_string(h[1]) +
           " (expected 20240520 v1 or 20240801 v7)");
    if (h[2] < 0) fail("negative token count in header");
    const size_t expect = 1024 + size_t(h[2]) * size_t(width_);
    if (size != expect)
      fail("header says " + std::to_string(h[2]) + " tokens, so " + std::to_string(expect) + " bytes, but the file has " +
           std::to_string(size));
    offset_ = 1024;
  } else {
    fail("unknown format '" + format + "'");
  }
  count_ = int64_t(size - size_t(offset_)) / width_;
  if (base_) ::madvise(const_cast<uint8_t*>(base_), mapped_, MADV_SEQUENTIAL);
}

TokenFile::~TokenFile() {
  if (base_) ::munmap(const_cast<uint8_t*>(base_), mapped_);
}

Corpus::Corpus(const std::string& path_or_glob, const std::string& format, int64_t num_tokens) : name_(path_or_glob) {
  open_token_files(path_or_glob, format, num_tokens);
}

Corpus::Corpus(const std::string& path, const CorpusFormat& f, int64_t num_tokens) : name_(path) {
  if (f.format != "text") {
    if (f.labels) throw DataError(path + ": labels need format text, not " + f.format);
    open_token_files(path, f.format, num_tokens);
    return;
  }
  const Vocabulary vocab = Vocabulary::load(f.vocab);
  if (vocab.size() > num_tokens)
    throw DataError(f.vocab + ": " + std::to_string(vocab.size()) + " tokens, more than num_tokens " +
                    std::to_string(num_tokens));
  text_ = read_text_ids(path, vocab);
  if (f.labels) labels_ = read_text_labels(path, vocab, f.ignore_label);  // checked line by line against the text
  total_ = int64_t(text_.size());
}

void Corpus::open_token_files(const std::string& path_or_glob, const std::string& format, int64_t num_tokens) {
  std::vector<std::string> paths;
  if (path_or_glob.find_first_of("*?[") != std::string::npos) {
    glob_t g{};
    int rc = ::glob(path_or_glob.c_str(), 0, nullptr, &g);
    if (rc == 0)
      for (size_t i = 0; i < g.gl_pathc; ++i) paths.push_back(g.gl_pathv[i]);
    ::globfree(&g);
    if (paths.empty()) throw DataError(path_or_glob + ": no file matches this pattern");
    std::sort(paths.begin(), paths.end());
  } else {
    paths.push_back(path_or_glob);
  }
  for (const std::string& p : paths) {
    auto f = std::make_unique<TokenFile>(p, format);
    for (int64_t i = 0; i < f->size(); ++i) {
      const int32_t id = (*f)[i];
      if (id < 0 || id >= num_tokens)  // a u32 id of 2^31 or more reads as negative
        throw DataError(p + ": token id " + std::to_string(uint32_t(id)) + " at position " + std::to_string(i) +
                        " is outside the vocabulary (num_tokens " + std::to_string(num_tokens) + ")");
    }
    starts_.push_back(total_);
    total_ += f->size();
    files_.push_back(std::move(f));
  }
}

int32_t Corpus::operator[](int64_t i) const {
  if (files_.empty()) return text_[size_t(i)];
  size_t k = size_t(std::upper_bound(starts_.begin(), starts_.end(), i) - starts_.begin()) - 1;
  return (*files_[k])[i - starts_[k]];
}

void Corpus::read(int64_t begin, int64_t n, int32_t* out) const {
  if (n <= 0) return;
  if (files_.empty()) {
    std::copy(text_.begin() + begin, text_.begin() + begin + n, out);
    return;
  }
  size_t k = size_t(std::upper_bound(starts_.begin(), starts_.end(), begin) - starts_.begin()) - 1;
  for (int64_t i = 0; i < n; ++i) {
    int64_t pos = begin + i;
    while (pos - starts_[k] >= files_[k]->size()) ++k;
    out[i] = (*files_[k])[pos - starts_[k]];
  }
}

void Corpus::read_labels(int64_t begin, int64_t n, int32_t* out) const {
  std::copy(labels_.begin() + begin, labels_.begin() + begin + n, out);
}

StreamBatcher::StreamBatcher(const Corpus& corpus, int64_t streams, int64_t bptt)
    : corpus_(corpus), streams_(streams), bptt_(bptt), length_(corpus.size() / streams) {
  if (length_ < 2)
    throw DataError(corpus.name() + ": " + std::to_string(corpus.size()) + " tokens are too few for " +
                    std::to_string(streams) + " streams (each needs at least 2)");
}

void StreamBatcher::set_cursor(int64_t c) {
  if (c < 0 || c >= length_) throw DataError("stream cursor " + std::to_string(c) + " outside the stream length");
  cursor_ = c;
}

int64_t StreamBatcher::next(int32_t* inputs, int32_t* targets, bool allow_partial) {
  const int64_t n = std::min(bptt_, positions() - cursor_);
  if (n <= 0 || (n < bptt_ && !allow_partial)) return 0;
  for (int64_t s = 0; s < streams_; ++s) {
    const int64_t base = s * length_ + cursor_;
    corpus_.read(base, n, inputs + s * n);
    if (corpus_.labelled()) corpus_.read_labels(base, n, targets + s * n);
    else corpus_.read(base + 1, n, targets + s * n);
  }
  cursor_ += n;
  return n;
}

}  // namespace fbt
