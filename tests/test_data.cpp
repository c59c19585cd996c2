// Token corpora in every format, their errors, and the stream batcher.
#include <doctest/doctest.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "data/tokens.hpp"
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
