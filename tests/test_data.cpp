// Token corpora in every format (word-level text with labels too), their errors, the stream
// batcher, and the code-execution task generator.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <map>
#include <fstream>

#include "data/algorithmic.hpp"
#include "data/text.hpp"
#include "data/tokens.hpp"
#include "ops/ops.hpp"
#include "run_fixture.hpp"

using namespace fbt;
using namespace fbt::testing;

TEST_CASE("data: bytes u16 u32 and llm.c shards") {
  TempDir d;
  const uint8_t b[5] = {1, 2, 3, 250, 0};
  write_bytes(d / "b.bin", b, 5);
  Corpus cb(d / "b.bin", "bytes", 256);
  CHECK(cb.size() == 5);
  CHECK(cb[3] == 250);
  const uint16_t w[3] = {7, 65000, 3};
  write_bytes(d / "w.bin", w, 6);
  Corpus cw(d / "w.bin", "u16", 65536);
  CHECK(cw[1] == 65000);
  const uint32_t u[2] = {100000, 5};
  write_bytes(d / "u.bin", u, 8);
  CHECK(Corpus(d / "u.bin", "u32", 200000)[0] == 100000);
  for (int version : {1, 7}) {
    std::vector<int32_t> header(256, 0);
    header[0] = version == 1 ? 20240520 : 20240801;
    header[1] = version;
    header[2] = 3;
    std::vector<uint8_t> f(1024);
    std::memcpy(f.data(), header.data(), 1024);
    for (uint32_t tok : {11u, 12u, 13u})
      for (int k = 0; k < (version == 1 ? 2 : 4); ++k) f.push_back(uint8_t(tok >> (8 * k)));
    write_bytes(d / ("shard_val_00000" + std::to_string(version) + ".bin"), f.data(), f.size());
  }
  Corpus shards(d / "shard_val_*.bin", "llmc", 50);
  CHECK(shards.size() == 6);
  CHECK(shards[0] == 11);
  CHECK(shards[5] == 13);
  std::vector<int32_t> out(4);
  shards.read(1, 4, out.data());
  CHECK(out == std::vector<int32_t>{12, 13, 11, 12});
}

TEST_CASE("data: malformed corpora get clear errors") {
  TempDir d;
  const uint8_t odd[3] = {1, 2, 3};
  write_bytes(d / "odd.bin", odd, 3);
  CHECK_THROWS_WITH_AS(Corpus(d / "odd.bin", "u16", 10), doctest::Contains("not a multiple of 2"), DataError);
  CHECK_THROWS_WITH_AS(Corpus(d / "odd.bin", "bytes", 3), doctest::Contains("token id 3 at position 2"), DataError);
  CHECK_THROWS_WITH_AS(Corpus(d / "odd.bin", "llmc", 10), doctest::Contains("too short for an llm.c header"), DataError);
  std::vector<int32_t> header(256, 0);
  header[0] = 12345;
  header[1] = 1;
  write_bytes(d / "magic.bin", header.data(), 1024);
  CHECK_THROWS_WITH_AS(Corpus(d / "magic.bin", "llmc", 10), doctest::Contains("bad llm.c header: magic 12345"), DataError);
  header[0] = 20240520;
  header[2] = 5;
  write_bytes(d / "short.bin", header.data(), 1024);
  CHECK_THROWS_WITH_AS(Corpus(d / "short.bin", "llmc", 10), doctest::Contains("header says 5 tokens"), DataError);
  CHECK_THROWS_WITH_AS(Corpus(d / "none.bin", "bytes", 256), doctest::Contains("cannot open"), DataError);
  CHECK_THROWS_WITH_AS(Corpus(d / "nothing_*.bin", "bytes", 256), doctest::Contains("no file matches"), DataError);
  // Found by fuzz_tokens: a u32 id of 2^31 or more read as a negative int32 and passed the check.
  const uint32_t big[2] = {7, 0xF5000007u};
  write_bytes(d / "big.bin", big, 8);
  CHECK_THROWS_WITH_AS(Corpus(d / "big.bin", "u32", 65536), doctest::Contains("token id 4110417927 at position 1"), DataError);
}

TEST_CASE("batcher: contiguous streams with shifted targets") {
  TempDir d;
  std::vector<uint8_t> seq(23);
  for (size_t i = 0; i < seq.size(); ++i) seq[i] = uint8_t(i);
  write_bytes(d / "s.bin", seq.data(), seq.size());
  Corpus c(d / "s.bin", "bytes", 256);
  StreamBatcher b(c, 3, 4);  // streams of 7: [0..6], [7..13], [14..20]
  CHECK(b.stream_length() == 7);
  std::vector<int32_t> in(12), tg(12);
  CHECK(b.next(in.data(), tg.data(), false) == 4);
  CHECK(in == std::vector<int32_t>{0, 1, 2, 3, 7, 8, 9, 10, 14, 15, 16, 17});
  CHECK(tg == std::vector<int32_t>{1, 2, 3, 4, 8, 9, 10, 11, 15, 16, 17, 18});
  CHECK(b.next(in.data(), tg.data(), false) == 0);  // only 2 predictable positions left
  CHECK(b.next(in.data(), tg.data(), true) == 2);
  CHECK(std::vector<int32_t>(tg.begin(), tg.begin() + 6) == std::vector<int32_t>{5, 6, 12, 13, 19, 20});
  b.rewind();
  CHECK(b.cursor() == 0);
  CHECK_THROWS_AS(StreamBatcher(c, 20, 4), DataError);
}

namespace {
void write_text(const std::string& path, const std::string& text) { std::ofstream(path) << text; }
CorpusFormat text_format(const std::string& vocab, bool labels) {
  CorpusFormat f;
  f.format = "text", f.vocab = vocab, f.labels = labels;
  return f;
}
}  // namespace

TEST_CASE("data: word-level text reads lines as one stream with ids from the vocabulary") {
  TempDir d;
  write_text(d / "vocab.txt", "a\nb\nc\n;\n");
  write_text(d / "t.txt", "a b  c ;\n\nc\ta\n");  // spaces, tabs and an empty line
  const Corpus c(d / "t.txt", text_format(d / "vocab.txt", false), 10);
  REQUIRE(c.size() == 6);
  std::vector<int32_t> ids(6);
  c.read(0, 6, ids.data());
  CHECK(ids == std::vector<int32_t>{0, 1, 2, 3, 2, 0});
  CHECK_FALSE(c.labelled());
  write_text(d / "bad.txt", "a b\nb q c\n");
  CHECK_THROWS_WITH_AS(Corpus(d / "bad.txt", text_format(d / "vocab.txt", false), 10),
                       (d / "bad.txt:2: token 'q' is not in the vocabulary " + d / "vocab.txt").c_str(), DataError);
  CHECK_THROWS_WITH_AS(Corpus(d / "t.txt", text_format(d / "vocab.txt", false), 3), doctest::Contains("more than num_tokens"),
                       DataError);
  write_text(d / "dup.txt", "a\nb\na\n");
  CHECK_THROWS_WITH_AS(Vocabulary::load(d / "dup.txt"), (d / "dup.txt:3: token 'a' appears twice (first on line 1)").c_str(),
                       DataError);
  write_text(d / "sp.txt", "a\nb c\n");
  CHECK_THROWS_WITH_AS(Vocabulary::load(d / "sp.txt"), doctest::Contains("sp.txt:2: expected one token"), DataError);
}

TEST_CASE("data: labels align with the text, '_' carries no loss, and bad label files name the line") {
  TempDir d;
  write_text(d / "vocab.txt", "x\n=\n1\n2\n;\nprint\n");
  write_text(d / "t.txt", "x = 1 ;\nprint x ;\n");
  write_text(d / "t.txt.labels", "_ _ _ _\n_ _ 1\n");
  const Corpus c(d / "t.txt", text_format(d / "vocab.txt", true), 6);
  REQUIRE(c.labelled());
  std::vector<int32_t> labels(7);
  c.read_labels(0, 7, labels.data());
  CHECK(labels == std::vector<int32_t>{kNoTarget, -1, -1, -1, -1, -1, 2});
  // The batcher's targets are the labels of the inputs themselves: every position counts.
  StreamBatcher b(c, 1, 7);
  CHECK(b.positions() == 7);
  std::vector<int32_t> in(7), tg(7);
  CHECK(b.next(in.data(), tg.data(), false) == 7);
  CHECK(in == std::vector<int32_t>{0, 1, 2, 4, 5, 0, 4});
  CHECK(tg == labels);

  write_text(d / "t.txt.labels", "_ _ _ _\n_ 1\n");
  CHECK_THROWS_WITH_AS(Corpus(d / "t.txt", text_format(d / "vocab.txt", true), 6),
                       (d / "t.txt.labels:2: 2 labels for 3 tokens on this line of " + d / "t.txt").c_str(), DataError);
  write_text(d / "t.txt.labels", "_ _ _ _\n_ _ 7\n");
  CHECK_THROWS_WITH_AS(Corpus(d / "t.txt", text_format(d / "vocab.txt", true), 6),
                       doctest::Contains("t.txt.labels:2: label '7' is not in the vocabulary"), DataError);
  write_text(d / "t.txt.labels", "_ _ _ _\n");
  CHECK_THROWS_WITH_AS(Corpus(d / "t.txt", text_format(d / "vocab.txt", true), 6),
                       doctest::Contains("t.txt.labels:2: the label file ends before"), DataError);
  fs::remove(d / "t.txt.labels");
  CHECK_THROWS_WITH_AS(Corpus(d / "t.txt", text_format(d / "vocab.txt", true), 6),
                       doctest::Contains("t.txt.labels: cannot open (data.labels: true needs a label file"), DataError);
  CorpusFormat bytes;
  bytes.labels = true;
  CHECK_THROWS_WITH_AS(Corpus(d / "t.txt", bytes, 256), doctest::Contains("labels need format text, not bytes"), DataError);
}

namespace {
// Runs a program of the task and checks it and its labels against the rules; returns the values
// printed. `every_statement`: every `;` is labelled with the value its statement leaves.
std::vector<int> run_program(const Program& p, int64_t K, bool every_statement = false) {
  const std::vector<std::string> vars{"x", "y", "z", "p", "r"};
  std::map<std::string, int> value;
  std::vector<int> printed;
  auto num = [&](const std::string& t) -> int {
    if (value.count(t)) return value.at(t);
    const int k = std::stoi(t);
    CHECK((k >= 1 && k <= 10));
    return k;
  };
  auto is_var = [&](const std::string& t) { return std::find(vars.begin(), vars.begin() + K, t) != vars.begin() + K; };
  // A simple statement at i (assign, ++, --); applies it when run. Returns the index past its ';'.
  auto simple = [&](size_t i, bool run) {
    const std::string v = p.tokens[i];
    REQUIRE(is_var(v));
    size_t end = i + 3;  // its ';'
    if (p.tokens[i + 1] == "=") {
      CHECK(value.count(v) == 0);  // assigned once
      if (run) value[v] = num(p.tokens[i + 2]);
    } else {
      REQUIRE(value.count(v) == 1);  // never used before its assignment
      const int next = value[v] + (p.tokens[i + 1] == "++" ? 1 : -1);
      CHECK((next >= 1 && next <= 10));  // the rules keep every value in 1..10
      if (run) value[v] = next;
      end = i + 2;
    }
    CHECK(p.tokens[end] == ";");
    CHECK(p.labels[end] == (every_statement && value.count(v) ? std::to_string(value[v]) : "_"));
    return end + 1;
  };
  size_t i = 0;
  int64_t statements = 0;
  while (p.tokens[i] != "END") {
    ++statements;
    if (p.tokens[i] == "print") {
      REQUIRE(value.count(p.tokens[i + 1]) == 1);
      printed.push_back(value[p.tokens[i + 1]]);
      CHECK(p.labels[i + 2] == std::to_string(printed.back()));
      i += 3;
    } else if (p.tokens[i] == "if") {
      REQUIRE(value.count(p.tokens[i + 1]) == 1);
      const int lhs = value[p.tokens[i + 1]], rhs = num(p.tokens[i + 3]);
      CHECK(p.tokens[i + 4] == ":");
      CHECK(p.tokens[i + 5] != "print");
      CHECK(p.tokens[i + 5] != "if");
      i = simple(i + 5, p.tokens[i + 2] == "<" ? lhs < rhs : lhs > rhs);
    } else {
      i = simple(i, true);
    }
  }
  CHECK(i + 1 == p.tokens.size());
  CHECK(statements == 100);
  int64_t labelled = 0;
  for (size_t k = 0; k < p.labels.size(); ++k) {
    labelled += p.labels[k] != "_";
    CHECK((p.labels[k] == "_" || p.tokens[k] == ";"));
  }
  if (!every_statement) CHECK(labelled == int64_t(printed.size()));
  return printed;
}
}  // namespace

TEST_CASE("data: the code-execution generator follows the task's rules and repeats with its seed") {
  AlgorithmicTask task;
  task.variables = 3;
  const std::vector<Program> a = generate_programs(task, 200, 7), b = generate_programs(task, 200, 7);
  const std::vector<Program> c = generate_programs(task, 200, 8);
  std::map<std::string, int64_t> kinds;
  int64_t prints = 0;
  for (size_t k = 0; k < a.size(); ++k) {
    CHECK(a[k].tokens == b[k].tokens);
    prints += int64_t(run_program(a[k], 3).size());
    for (const std::string& t : a[k].tokens) kinds[t] += 1;
  }
  CHECK(a[0].tokens != c[0].tokens);
  CHECK(kinds.count("p") == 0);  // 3 variables: x y z only
  for (const char* t : {"x", "y", "z", "print", "if", "<", ">", "++", "--", "="}) CHECK(kinds[t] > 0);
  // print is one of five kinds drawn uniformly (the others are redrawn when they cannot apply)
  CHECK(double(prints) / (200.0 * 100.0) == doctest::Approx(0.2).epsilon(0.35));
  CHECK_THROWS_WITH_AS(generate_programs(AlgorithmicTask{6, 100, 1}, 1, 1), doctest::Contains("1 to 5"), std::invalid_argument);

  // Labelling every statement changes the labels only: the same programs, the same print labels.
  const std::vector<Program> dense = generate_programs(task, 200, 7, /*every_statement=*/true);
  for (size_t k = 0; k < a.size(); ++k) {
    CHECK(dense[k].tokens == a[k].tokens);
    CHECK(run_program(dense[k], 3, true) == run_program(a[k], 3));
  }
}

TEST_CASE("data: prepare-algorithmic writes three independent splits and a vocabulary they all read") {
  TempDir d;
  AlgorithmicTask task;
  task.variables = 5, task.statements = 20, task.seed = 3;
  write_algorithmic_task(task, d / "task");
  const Vocabulary vocab = Vocabulary::load(d / "task/vocab.txt");
  CHECK(vocab.id("r") >= 0);
  CHECK(vocab.size() == 25);
  std::vector<std::string> first_lines;
  for (const char* split : {"train", "valid", "test"}) {
    const std::string path = d / ("task/" + std::string(split) + ".txt");
    const Corpus c(path, text_format(d / "task/vocab.txt", true), vocab.size());
    std::ifstream in(path);
    std::string line;
    int64_t lines = 0;
    while (std::getline(in, line))
      if (lines++ == 0) first_lines.push_back(line);
    CHECK(lines == (std::string(split) == "train" ? 10000 : 1000));
    CHECK(c.labelled());
  }
  auto read = [](const std::string& path) {
    std::ifstream in(path);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  CHECK(first_lines[0] != first_lines[1]);  // each split from its own seed
  CHECK(first_lines[1] != first_lines[2]);
  write_algorithmic_task(task, d / "again");
  for (const char* f : {"train.txt", "valid.txt.labels", "vocab.txt"})
    CHECK(read(d / ("task/" + std::string(f))) == read(d / ("again/" + std::string(f))));
  // --label-every-statement: the train labels get denser; valid and test stay the official ones.
  task.label_every_statement = true;
  write_algorithmic_task(task, d / "dense");
  CHECK(read(d / "dense/train.txt") == read(d / "task/train.txt"));
  CHECK(read(d / "dense/train.txt.labels") != read(d / "task/train.txt.labels"));
  for (const char* f : {"valid.txt.labels", "test.txt.labels"})
    CHECK(read(d / ("dense/" + std::string(f))) == read(d / ("task/" + std::string(f))));
  // One vocabulary for every number of variables: a curriculum's stages share token ids.
  task.variables = 1;
  write_algorithmic_task(task, d / "one");
  CHECK(read(d / "one/vocab.txt") == read(d / "task/vocab.txt"));
}
