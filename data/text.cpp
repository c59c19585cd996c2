#include "data/text.hpp"

#include <fstream>
#include <sstream>

#include "data/tokens.hpp"
#include "util/files.hpp"

namespace fbt {

std::vector<std::string> split_words(const std::string& text) {
  std::istringstream in(text);
  std::vector<std::string> words;
  for (std::string w; in >> w;) words.push_back(w);
  return words;
}

namespace {

std::ifstream open_text(const std::string& path, const std::string& why = "") {
  std::ifstream in(path);
  if (!in) throw DataError(path + ": cannot open" + why);
  return in;
}

std::string at_line(const std::string& path, int64_t line) { return path + ":" + std::to_string(line) + ": "; }

}  // namespace

Vocabulary::Vocabulary(std::vector<std::string> tokens, const std::string& source)
    : tokens_(std::move(tokens)), source_(source) {
  for (size_t i = 0; i < tokens_.size(); ++i) {
    const auto [it, fresh] = ids_.emplace(tokens_[i], int32_t(i));
    if (!fresh)
      throw DataError(at_line(source, int64_t(i) + 1) + "token '" + tokens_[i] + "' appears twice (first on line " +
                      std::to_string(it->second + 1) + ")");
  }
}

Vocabulary Vocabulary::load(const std::string& path) {
  std::ifstream in = open_text(path);
  std::vector<std::string> tokens;
  int64_t line_no = 0;
  for (std::string line; std::getline(in, line);) {
    ++line_no;
    const std::vector<std::string> words = split_words(line);
    if (words.size() != 1 || words[0] != line)
      throw DataError(at_line(path, line_no) + "expected one token without spaces, got '" + line + "'");
    tokens.push_back(line);
  }
  if (tokens.empty()) throw DataError(path + ": the vocabulary is empty");
  return Vocabulary(std::move(tokens), path);
}

void Vocabulary::save(const std::string& path) const {
  std::string text;
  for (const std::string& t : tokens_) text += t + "\n";
  write_text_atomic(path, text);
}

std::vector<int32_t> read_text_ids(const std::string& path, const Vocabulary& vocab) {
  std::ifstream in = open_text(path);
  std::vector<int32_t> ids;
  int64_t line_no = 0;
  for (std::string line; std::getline(in, line);) {
    ++line_no;
    for (const std::string& w : split_words(line)) {
      const int32_t id = vocab.id(w);
      if (id < 0) throw DataError(at_line(path, line_no) + "token '" + w + "' is not in the vocabulary " + vocab.source());
      ids.push_back(id);
    }
  }
  return ids;
}

std::vector<int32_t> read_text_labels(const std::string& path, const Vocabulary& vocab, const std::string& ignore) {
  const std::string label_path = path + ".labels";
  std::ifstream text = open_text(path);
  std::ifstream labels = open_text(label_path, " (data.labels: true needs a label file beside every split)");
  std::vector<int32_t> out;
  int64_t line_no = 0;
  std::string tline, lline;
  while (true) {
    const bool more_text = bool(std::getline(text, tline)), more_labels = bool(std::getline(labels, lline));
    if (!more_text && !more_labels) break;
    ++line_no;
    if (more_text != more_labels)
      throw DataError(at_line(label_path, line_no) + (more_text ? "the label file ends before " : "the label file goes on past ") +
                      path + " (" + std::to_string(line_no - 1) + " lines)");
    const std::vector<std::string> words = split_words(tline), marks = split_words(lline);
    if (words.size() != marks.size())
      throw DataError(at_line(label_path, line_no) + std::to_string(marks.size()) + " labels for " +
                      std::to_string(words.size()) + " tokens on this line of " + path);
    for (const std::string& m : marks) {
      const int32_t id = m == ignore ? -1 : vocab.id(m);
      if (id < 0 && m != ignore)
        throw DataError(at_line(label_path, line_no) + "label '" + m + "' is not in the vocabulary " + vocab.source());
      out.push_back(id);
    }
  }
  return out;
}

}  // namespace fbt
