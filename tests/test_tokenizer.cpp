// The tokenizers (bytes, words, SentencePiece): exact round trips of valid UTF-8, their errors, UTF-8 output,
// the run's tokenizer checked against the model, bits per byte, and fine-tuning's companion:
// the tokenizer a weights file records.
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "data/tokenizer.hpp"
#include "data/tokens.hpp"
#include "models/feedback_transformer.hpp"
#include "run_fixture.hpp"
#include "train/checkpoint.hpp"
#include "train/evaluate.hpp"
#include "util/safetensors.hpp"
#include "train/trainer.hpp"
#include "util/config_section.hpp"

using namespace fbt;
using namespace fbt::testing;
namespace fs = std::filesystem;

namespace {

// A corpus with some variety: verses with numbers, punctuation, non-ASCII letters.
std::string verses(int n) {
  std::string s;
  const char* words[] = {"light", "darkness", "waters", "heaven", "earth", "firmament", "Eden", "café", "naïve"};
  for (int i = 0; i < n; ++i)
    s += "And God said, Let there be " + std::string(words[i % 9]) + " " + std::to_string(i) + ": and it was so.\n";
  return s;
}

void write_text(const std::string& path, const std::string& text) { std::ofstream(path, std::ios::binary) << text; }

}  // namespace

TEST_CASE("tokenizer: bytes and words round trip; an unknown word is an error naming it") {
  const auto bytes = load_tokenizer("bytes", "");
  const std::string text = "In the beginning\n\xff\x01";
  CHECK(bytes->size() == 256);
  CHECK(bytes->decode(bytes->encode(text)) == text);

  TempDir d;
  write_text(d / "vocab.txt", "the\nbeginning\nIn\n");
  const auto words = load_tokenizer("words", d / "vocab.txt");
  CHECK(words->size() == 3);
  CHECK(words->encode("In the\n beginning") == std::vector<int32_t>{2, 0, 1});
  CHECK(words->decode({2, 0, 1}) == " In the beginning");
  CHECK_THROWS_WITH_AS(words->encode("In the end", "prompt"), doctest::Contains("prompt: word 'end' is not in the vocabulary"),
                       DataError);
  CHECK_THROWS_WITH_AS(load_tokenizer("words", d / "none.txt"), doctest::Contains("none.txt: no such tokenizer file"), DataError);
  CHECK_THROWS_WITH_AS(load_tokenizer("sentencepiece", d / "vocab.txt"), doctest::Contains("not a SentencePiece model"),
                       DataError);
  CHECK_THROWS_WITH_AS(load_tokenizer("bpe", ""), doctest::Contains("expected bytes, words or sentencepiece"), DataError);
  CHECK(word_vocabulary("b a b c b a") == std::vector<std::string>{"b", "a", "c"});  // by count, ties in order
}

TEST_CASE("tokenizer: a trained SentencePiece model decodes every text exactly (bytes for what it lacks)") {
  TempDir d;
  write_text(d / "corpus.txt", verses(400));
  for (const std::string type : {"bpe", "unigram"}) {
    train_sentencepiece(d / "corpus.txt", d / (type + ".model"), {320, type});
    const auto sp = load_tokenizer("sentencepiece", d / (type + ".model"));
    CHECK(sp->size() == 320);
    const std::string text = "And God said,  Let there be light 7.\nNew line, tabs\tand \xe2\x82\xac\xf0\x9f\x8c\x8d bytes";
    const std::vector<int32_t> ids = sp->encode(text);
    CHECK(sp->decode(ids) == text);
    CHECK(ids.size() < text.size());  // the pieces are longer than bytes
    int64_t bytes = 0;
    for (int32_t id : ids) bytes += int64_t(sp->piece(id).size());
    CHECK(bytes == int64_t(text.size()));  // what bits per byte divides by
    CHECK(sp->decode(sp->encode("a\xff b")) == "a\xef\xbf\xbd b");  // SentencePiece reads invalid UTF-8 as U+FFFD
  }
  write_text(d / "tiny.txt", "a b c\n");
  CHECK_THROWS_WITH_AS(train_sentencepiece(d / "tiny.txt", d / "tiny.model", {8000, "bpe"}),
                       doctest::Contains("tiny.txt: cannot train a SentencePiece model of 8000 pieces: Vocabulary size too high"),
                       DataError);
}

TEST_CASE("tokenizer: UTF-8 output waits for a split sequence and replaces what is invalid") {
  Utf8Stream s;
  CHECK(s.push("caf\xc3") == "caf");
  CHECK(s.push("\xa9 \xe2\x82") == "\xc3\xa9 ");
  CHECK(s.push("\xac!") == "\xe2\x82\xac!");
  CHECK(s.push("\xff" "a") == "\xef\xbf\xbd" "a");
  CHECK(s.push("\xe2\x28") == "\xef\xbf\xbd(");  // a lead byte whose next byte cannot follow it
  CHECK(s.push("\xed\xa0\x80") == "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");  // a surrogate: no valid prefix
  CHECK(s.push("\xf0\x9f") == "");
  CHECK(s.finish() == "\xef\xbf\xbd");  // cut off at the end
  CHECK(s.finish().empty());
}

TEST_CASE("tokenizer: the run's tokenizer is checked against the model and the id format") {
  TempDir d;
  std::string many;
  for (int i = 0; i < 65537; ++i) many += "w" + std::to_string(i) + "\n";
  write_text(d / "big.txt", many);
  write_text(d / "small.txt", "a\nb\n");
  const std::string big = "data.tokenizer_model=" + (d / "big.txt");
  RunConfig c = load_run_config(write_config(d), {"data.format=u16", "data.tokenizer=words", big, "model.num_tokens=70000"});
  CHECK_THROWS_WITH_AS(run_tokenizer(c), doctest::Contains("big.txt: 65537 ids do not fit data.format u16"), ConfigError);
  c = load_run_config(write_config(d), {"data.format=u32", "data.tokenizer=words", big, "model.num_tokens=300"});
  CHECK_THROWS_WITH_AS(run_tokenizer(c), doctest::Contains("big.txt: 65537 ids, more than model.num_tokens 300"), ConfigError);
  CHECK_THROWS_WITH_AS(load_run_config(write_config(d), {"data.format=u16", "data.tokenizer=words",
                                                         "data.tokenizer_model=" + (d / "gone.txt")}),
                       doctest::Contains(("data.tokenizer_model: " + (d / "gone.txt") + ": no such file").c_str()), ConfigError);
  CHECK_THROWS_WITH_AS(load_run_config(write_config(d), {"data.tokenizer=sentencepiece"}),
                       doctest::Contains("format bytes is read with the bytes tokenizer"), ConfigError);
  CHECK_THROWS_WITH_AS(load_run_config(write_config(d), {"data.format=u16", "data.tokenizer=sentencepiece"}),
                       doctest::Contains("tokenizer_model"), ConfigError);
  CHECK(run_tokenizer(load_run_config(write_config(d)))->kind() == "bytes");
  CHECK(run_tokenizer(load_run_config(write_config(d), {"data.format=u16"})) == nullptr);
}

TEST_CASE("tokenizer: bits per byte divide the loss by the bytes of text; bytes give bpb = bpc") {
  TempDir d;
  RunConfig c = load_run_config(write_config(d));
  FeedbackTransformer model(c.model);
  model.init(3);
  Corpus valid(c.data.valid, "bytes", 256);
  const auto bytes = load_tokenizer("bytes", "");
  const EvalResult r = evaluate(model, valid, 3, 7, 0, false, bytes.get());
  CHECK(r.bytes == r.tokens);
  CHECK(r.bpb() == doctest::Approx(r.bpc()));
  CHECK(evaluate(model, valid, 3, 7).bytes == 0);  // without a tokenizer, no bpb
}

TEST_CASE("tokenizer: a run records its tokenizer; its weights and checkpoints find it again") {
  TempDir d;
  write_text(d / "corpus.txt", verses(300));
  train_sentencepiece(d / "corpus.txt", d / "sp.model", {400, "bpe"});
  const auto sp = load_tokenizer("sentencepiece", d / "sp.model");
  const std::vector<int32_t> ids = sp->encode(verses(300));
  std::vector<uint16_t> u16(ids.begin(), ids.end());
  write_bytes(d / "ids.bin", u16.data(), u16.size() * 2);
  RunConfig c = load_run_config(write_config(d), {"data.format=u16", "data.tokenizer=sentencepiece",
                                                  "data.tokenizer_model=" + (d / "sp.model"), "model.num_tokens=400",
                                                  "data.train=" + (d / "ids.bin"), "data.valid=" + (d / "ids.bin")});
  REQUIRE(Trainer(c).run(false));
  CHECK(fs::exists(d / "out/tokenizer.model"));
  for (const std::string where : {"out", "out/model.safetensors", "out/checkpoints/step_00000008"}) {
    const auto t = load_run_tokenizer(d / where);
    REQUIRE(t != nullptr);
    CHECK(t->kind() == "sentencepiece");
    CHECK(t->encode("And God said") == sp->encode("And God said"));
  }
  // A shared weights file cannot make fbt read a tokenizer from elsewhere: only the name fbt writes.
  for (const std::string hostile : {"../sp.model", "/etc/passwd", "sub/tokenizer.model", ".."}) {
    INFO(hostile);
    SafeTensors st = SafeTensors::load(d / "out/model.safetensors");
    st.metadata["fbt_tokenizer_file"] = hostile;
    fs::create_directories(fs::path(d / "shared"));
    st.save(d / "shared/model.safetensors");
    CHECK_THROWS_WITH(load_run_tokenizer(d / "shared"), doctest::Contains("fbt reads only tokenizer.model beside the weights"));
  }
  fs::remove(d / "out/tokenizer.model");
  CHECK_THROWS_WITH(load_run_tokenizer(d / "out"), doctest::Contains("records the sentencepiece tokenizer tokenizer.model"));
}
