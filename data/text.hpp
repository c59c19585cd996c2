// Word-level text: whitespace-separated tokens, lines read one after another as one stream (a
// newline is not a token), ids from a vocabulary file (one token a line; the id of a token is its
// line's index, counting from 0). With labels, every file F has F.labels beside it with as many
// tokens on every line, the label of each position (the official code-execution task's format);
// a label equal to the ignore token carries no loss.
#pragma once
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

namespace fbt {

// The whitespace-separated tokens of a text, in order.
std::vector<std::string> split_words(const std::string& text);

class Vocabulary {
 public:
  Vocabulary() = default;
  // Reads path; an empty file, a line holding whitespace or nothing, or a token listed twice is
  // an error naming the file and the line.
  static Vocabulary load(const std::string& path);
  explicit Vocabulary(std::vector<std::string> tokens, const std::string& source = "vocabulary");

  int64_t size() const { return int64_t(tokens_.size()); }
  const std::string& token(int32_t id) const { return tokens_[size_t(id)]; }
  // The id of token, or -1.
  int32_t id(const std::string& token) const {
    const auto it = ids_.find(token);
    return it == ids_.end() ? -1 : it->second;
  }
  const std::string& source() const { return source_; }
  // One token a line, in id order.
  void save(const std::string& path) const;

 private:
  std::vector<std::string> tokens_;
  std::unordered_map<std::string, int32_t> ids_;
  std::string source_;
};

// The ids of a text file's tokens, every line's in turn. A token missing from the vocabulary is
// an error naming the file, the line and the token.
std::vector<int32_t> read_text_ids(const std::string& path, const Vocabulary& vocab);
// The labels of text file `path` from path + ".labels": one per token of path, -1 where the label
// is `ignore`. A missing file, a line whose count differs from the text's, or a label missing from
// the vocabulary is an error naming the file and the line.
std::vector<int32_t> read_text_labels(const std::string& path, const Vocabulary& vocab, const std::string& ignore);

}  // namespace fbt
