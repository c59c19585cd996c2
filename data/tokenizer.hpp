// Text <-> token ids, one interface for the three kinds a run may use:
//   bytes          every byte is a token (256 ids)
//   words          whitespace-separated tokens of a vocabulary file (data/text.hpp; one token a
//                  line), written back each after a space
//   sentencepiece  a SentencePiece model (BPE or unigram) trained by fbt with identity
//                  normalization and byte fallback, so that any valid UTF-8 text encodes and
//                  decodes exactly (SentencePiece reads an invalid byte as U+FFFD)
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace fbt {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual const std::string& kind() const = 0;
  virtual int64_t size() const = 0;  // ids are 0 .. size()-1
  // A token missing from a words vocabulary is an error naming it and `where`.
  virtual std::vector<int32_t> encode(const std::string& text, const std::string& where = "text") const = 0;
  // The bytes an id stands for in running text (a SentencePiece word boundary as a space, a
  // byte-fallback piece as its byte, a word after its separating space); a sequence
  // decodes to the concatenation of its pieces.
  const std::string& piece(int32_t id) const { return pieces_.at(size_t(id)); }
  std::string decode(const std::vector<int32_t>& ids) const;

 protected:
  std::vector<std::string> pieces_;  // by id
};

// kind "bytes" (no file), "words" (a vocabulary file) or "sentencepiece" (a .model file); a
// missing or unreadable file is an error naming it.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& kind, const std::string& file);

// The name a run gives its copy of a tokenizer's file: tokenizer.model or vocab.txt.
std::string tokenizer_file_name(const std::string& kind);

// Bytes as they come (a sampled piece at a time) turned into valid UTF-8 for a terminal: a
// sequence cut between two pieces waits for its rest, and what can never be valid becomes
// U+FFFD (one per maximal invalid subpart, as Unicode recommends).
class Utf8Stream {
 public:
  std::string push(const std::string& bytes);  // what can be printed now
  std::string finish();                        // the rest (an unfinished sequence as U+FFFD)

 private:
  std::string pending_;
};

// How `fbt prepare` trains a SentencePiece model.
struct SentencePieceOptions {
  int64_t vocab_size = 8000;
  std::string model_type = "bpe";  // bpe | unigram
};
// Trains on text file `corpus` (one sentence a line) and writes `model_path`. A corpus too small
// for the vocabulary, or any other refusal of the trainer, is an error naming the corpus.
void train_sentencepiece(const std::string& corpus, const std::string& model_path, const SentencePieceOptions& o);

// The vocabulary of words of a text (every whitespace-separated token), most frequent first
// (ties in byte order), for `fbt prepare --tokenizer words`.
std::vector<std::string> word_vocabulary(const std::string& text);

}  // namespace fbt
