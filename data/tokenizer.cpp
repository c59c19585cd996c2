#include "data/tokenizer.hpp"

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <algorithm>
#include <filesystem>
#include <unordered_map>

#include "data/text.hpp"
#include "data/tokens.hpp"

namespace fbt {

namespace {

const std::string kBytes = "bytes", kWords = "words", kSentencePiece = "sentencepiece";

class ByteTokenizer : public Tokenizer {
 public:
  ByteTokenizer() {
    for (int b = 0; b < 256; ++b) pieces_.emplace_back(1, char(b));
  }
  const std::string& kind() const override { return kBytes; }
  int64_t size() const override { return 256; }
  std::vector<int32_t> encode(const std::string& text, const std::string&) const override {
    return std::vector<int32_t>(reinterpret_cast<const uint8_t*>(text.data()),
                                reinterpret_cast<const uint8_t*>(text.data()) + text.size());
  }
};

class WordTokenizer : public Tokenizer {
 public:
  explicit WordTokenizer(const std::string& file) : vocab_(Vocabulary::load(file)) {
    for (int32_t id = 0; id < vocab_.size(); ++id) pieces_.push_back(" " + vocab_.token(id));
  }
  const std::string& kind() const override { return kWords; }
  int64_t size() const override { return vocab_.size(); }
  std::vector<int32_t> encode(const std::string& text, const std::string& where) const override {
    std::vector<int32_t> ids;
    for (const std::string& word : split_words(text)) {
      const int32_t id = vocab_.id(word);
      if (id < 0) throw DataError(where + ": word '" + word + "' is not in the vocabulary " + vocab_.source());
      ids.push_back(id);
    }
    return ids;
  }

 private:
  Vocabulary vocab_;
};

class SentencePieceTokenizer : public Tokenizer {
 public:
  explicit SentencePieceTokenizer(const std::string& file) {
    if (const auto status = sp_.Load(file); !status.ok())
      throw DataError(file + ": not a SentencePiece model (" + status.ToString() + ")");
    for (int id = 0; id < sp_.GetPieceSize(); ++id) pieces_.push_back(text_of(id));
  }
  const std::string& kind() const override { return kSentencePiece; }
  int64_t size() const override { return sp_.GetPieceSize(); }
  std::vector<int32_t> encode(const std::string& text, const std::string& where) const override {
    std::vector<int> ids;
    if (const auto status = sp_.Encode(text, &ids); !status.ok())
      throw DataError(where + ": SentencePiece cannot encode it (" + status.ToString() + ")");
    return std::vector<int32_t>(ids.begin(), ids.end());
  }

 private:
  // "<0x0A>" is the byte 0x0A, U+2581 marks a space, control pieces (<s>, </s>, <unk>) are empty.
  std::string text_of(int id) const {
    const std::string& p = sp_.IdToPiece(id);
    if (sp_.IsByte(id)) return std::string(1, char(std::stoi(p.substr(3, 2), nullptr, 16)));
    if (sp_.IsControl(id) || sp_.IsUnknown(id)) return "";
    std::string out;
    for (size_t i = 0; i < p.size(); ++i) {
      if (p.compare(i, 3, "\xE2\x96\x81") == 0) {
        out += ' ', i += 2;
      } else {
        out += p[i];
      }
    }
    return out;
  }
  sentencepiece::SentencePieceProcessor sp_;
};

}  // namespace

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string text;
  for (int32_t id : ids) text += piece(id);
  return text;
}

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& kind, const std::string& file) {
  if (kind == kBytes) return std::make_unique<ByteTokenizer>();
  if (kind != kWords && kind != kSentencePiece)
    throw DataError("tokenizer '" + kind + "': expected bytes, words or sentencepiece");
  if (file.empty()) throw DataError("tokenizer " + kind + " needs its file (data.tokenizer_model)");
  if (!std::filesystem::is_regular_file(file)) throw DataError(file + ": no such tokenizer file");
  if (kind == kWords) return std::make_unique<WordTokenizer>(file);
  return std::make_unique<SentencePieceTokenizer>(file);
}

namespace {

const char* const kReplacement = "\xEF\xBF\xBD";

// The length of the valid UTF-8 sequence at s[i]: > 0 when complete and valid, 0 when the bytes
// so far are a valid but unfinished start (at the end of s), -k when the first k bytes are a
// maximal invalid subpart.
int utf8_sequence(const std::string& s, size_t i) {
  const auto b = [&](size_t k) { return uint8_t(s[i + k]); };
  const uint8_t c = b(0);
  if (c < 0x80) return 1;
  int need;
  uint8_t lo = 0x80, hi = 0xBF;  // the range of the second byte
  if (c >= 0xC2 && c <= 0xDF) need = 1;
  else if (c >= 0xE0 && c <= 0xEF) need = 2, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
  else if (c >= 0xF0 && c <= 0xF4) need = 3, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
  else return -1;
  for (int k = 1; k <= need; ++k) {
    if (i + size_t(k) >= s.size()) return 0;
    const uint8_t x = b(size_t(k));
    if (k == 1 ? (x < lo || x > hi) : (x < 0x80 || x > 0xBF)) return -k;
  }
  return need + 1;
}

}  // namespace

std::string Utf8Stream::push(const std::string& bytes) {
  pending_ += bytes;
  std::string out;
  size_t i = 0;
  while (i < pending_.size()) {
    const int n = utf8_sequence(pending_, i);
    if (n == 0) break;  // wait for the rest
    if (n > 0) out.append(pending_, i, size_t(n)), i += size_t(n);
    else out += kReplacement, i += size_t(-n);
  }
  pending_.erase(0, i);
  return out;
}

std::string Utf8Stream::finish() {
  std::string out;
  if (!pending_.empty()) out = kReplacement;
  pending_.clear();
  return out;
}

std::string tokenizer_file_name(const std::string& kind) {
  return kind == kSentencePiece ? "tokenizer.model" : kind == kWords ? "vocab.txt" : "";
}

void train_sentencepiece(const std::string& corpus, const std::string& model_path, const SentencePieceOptions& o) {
  if (o.model_type != "bpe" && o.model_type != "unigram")
    throw DataError("--model-type " + o.model_type + ": expected bpe or unigram");
  std::string prefix = model_path;
  if (prefix.size() > 6 && prefix.compare(prefix.size() - 6, 6, ".model") == 0) prefix.resize(prefix.size() - 6);
  const std::unordered_map<std::string, std::string> args = {
      {"input", corpus},
      {"model_prefix", prefix},
      {"vocab_size", std::to_string(o.vocab_size)},
      {"model_type", o.model_type},
      // Exact round trips: no normalization, spaces kept as they are, bytes for what the pieces miss.
      {"normalization_rule_name", "identity"},
      {"remove_extra_whitespaces", "false"},
      {"add_dummy_prefix", "false"},
      {"byte_fallback", "true"},
      {"character_coverage", "1.0"},
      {"input_sentence_size", "2000000"},
      {"shuffle_input_sentence", "true"},
      {"max_sentence_length", "65536"},
      {"num_threads", "2"},
      {"minloglevel", "2"},
  };
  if (const auto status = sentencepiece::SentencePieceTrainer::Train(args); !status.ok()) {
    std::string why = status.ToString();  // "Internal: file(line) [check] reason": the reason
    if (const size_t at = why.find("] "); at != std::string::npos) why = why.substr(at + 2);
    throw DataError(corpus + ": cannot train a SentencePiece model of " + std::to_string(o.vocab_size) + " pieces: " + why);
  }
  std::error_code ec;
  std::filesystem::remove(prefix + ".vocab", ec);  // the model file holds the pieces; the .vocab is a listing
}

std::vector<std::string> word_vocabulary(const std::string& text) {
  std::unordered_map<std::string, int64_t> counts;
  for (const std::string& word : split_words(text)) ++counts[word];
  std::vector<std::pair<std::string, int64_t>> sorted(counts.begin(), counts.end());
  std::sort(sorted.begin(), sorted.end(),
            [](const auto& a, const auto& b) { return a.second != b.second ? a.second > b.second : a.first < b.first; });
  std::vector<std::string> words;
  for (auto& [w, n] : sorted) words.push_back(w);
  return words;
}

}  // namespace fbt
