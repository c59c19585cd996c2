// safetensors: round trip, every malformed-file case, atomic saves, a corruption fuzz.
#include <doctest/doctest.h>

#include <cstring>
#include <fstream>
#include <unistd.h>

#include "backend/rng.hpp"
#include "models/weights.hpp"

using namespace fbt;

namespace {
std::vector<uint8_t> with_header(const std::string& json, size_t data_bytes) {
  std::vector<uint8_t> f(8 + json.size() + data_bytes, 0);
  uint64_t n = json.size();
  for (int i = 0; i < 8; ++i) f[size_t(i)] = uint8_t(n >> (8 * i));
  std::memcpy(f.data() + 8, json.data(), json.size());
  return f;
}
void rejects(const std::vector<uint8_t>& f, const std::string& needle) {
  INFO("expecting an error containing: " << needle);
  CHECK_THROWS_WITH_AS(SafeTensors::parse(f, "x.safetensors"), doctest::Contains(needle.c_str()), SafeTensorsError);
}
}  // namespace

TEST_CASE("safetensors: round trip with metadata and a 0-d tensor") {
  SafeTensors st;
  float a[6] = {1, 2, 3, 4, 5, 6}, s = 7;
  int32_t ids[3] = {1, -2, 3};
  st.tensors["a"] = StTensor::from_f32({2, 3}, a);
  st.tensors["scalar"] = StTensor::from_f32({}, &s);
  st.tensors["ids"] = StTensor::from_i32({3}, ids);
  st.tensors["empty"] = StTensor::from_f32({0, 4}, nullptr);
  st.metadata["k"] = "v";
  std::vector<uint8_t> bytes = st.serialize();
  CHECK((bytes[0] | (bytes[1] << 8)) % 8 == 0);
  SafeTensors back = SafeTensors::parse(bytes, "mem");
  CHECK(back.metadata.at("k") == "v");
  CHECK(back.at("a").to_f32("a") == std::vector<float>(a, a + 6));
  CHECK(back.at("scalar").shape.empty());
  CHECK(back.at("scalar").to_f32("s")[0] == 7.f);
  CHECK(back.at("ids").to_i32("ids") == std::vector<int32_t>(ids, ids + 3));
  CHECK(back.at("empty").numel() == 0);
}

TEST_CASE("safetensors: I64 token ids convert and F32 refuses integers") {
  int64_t v[2] = {5, 7};
  StTensor t{"I64", {2}, std::vector<uint8_t>(reinterpret_cast<uint8_t*>(v), reinterpret_cast<uint8_t*>(v) + 16)};
  CHECK(t.to_i32("t") == std::vector<int32_t>{5, 7});
  CHECK_THROWS_AS(t.to_f32("t"), SafeTensorsError);
}

TEST_CASE("safetensors: malformed files are rejected with the reason") {
  rejects({1, 2, 3}, "too short");
  std::vector<uint8_t> huge(16, 0);
  huge[3] = 0x10;  // 2^28 > 1e8
  rejects(huge, "exceeds");
  std::vector<uint8_t> past = with_header("{}", 0);
  past[0] = 200;
  rejects(past, "past the end");
  rejects(with_header("[1,2]   ", 0), "does not start with");
  rejects(with_header("{\"a\": ", 0), "not valid JSON");
  rejects(with_header(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8),
          "duplicate tensor name 'a'");
  rejects(with_header(R"({"a":{"dtype":"F31","shape":[1],"data_offsets":[0,4]}})", 4), "unknown dtype F31");
  rejects(with_header(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", 4), "need 8 bytes");
  rejects(with_header(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,8]}})", 4), "outside");
  rejects(with_header(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8), "(gap)");
  rejects(with_header(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8),
          "(overlap)");
  rejects(with_header(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 8), "cover 4");
  rejects(with_header(R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4), "non-negative");
  rejects(with_header(R"({"a":{"dtype":"F32","data_offsets":[0,4]}})", 4), "needs dtype, shape");
  rejects(with_header(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,4]}})", 4),
          "exceeds the file's size");
  rejects(with_header(R"({"__metadata__":{"k":3}})", 0), "not a string");
}

TEST_CASE("safetensors: atomic save leaves no temporary file") {
  SafeTensors st;
  float a = 1;
  st.tensors["a"] = StTensor::from_f32({1}, &a);
  const std::string path = "test_atomic.safetensors";
  st.save(path);
  CHECK(SafeTensors::load(path).at("a").to_f32("a")[0] == 1.f);
  std::ifstream tmp(path + ".tmp." + std::to_string(::getpid()));
  CHECK_FALSE(tmp.good());
  std::remove(path.c_str());
  CHECK_THROWS_AS(st.save("/nonexistent-dir/x.safetensors"), std::runtime_error);
}

TEST_CASE("safetensors: thousands of corrupted files never crash the reader") {
  SafeTensors st;
  float a[6] = {1, 2, 3, 4, 5, 6};
  int32_t ids[3] = {1, 2, 3};
  st.tensors["a"] = StTensor::from_f32({2, 3}, a);
  st.tensors["ids"] = StTensor::from_i32({3}, ids);
  st.metadata["k"] = "v";
  const std::vector<uint8_t> good = st.serialize();
  Rng rng(123);
  int rejected = 0, accepted = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    std::vector<uint8_t> f = good;
    const int edits = 1 + int(rng.uniform() * 4);
    for (int e = 0; e < edits; ++e) {
      const size_t at = size_t(rng.uniform() * float(f.size()));
      switch (int(rng.uniform() * 3)) {
        case 0: f[at] = uint8_t(rng.uniform() * 256); break;       // flip a byte
        case 1: f.resize(at); break;                                  // truncate
        default: f.insert(f.begin() + long(at), uint8_t('9')); break;  // insert
      }
      if (f.empty()) break;
    }
    try {
      SafeTensors::parse(f, "fuzz");
      ++accepted;
    } catch (const SafeTensorsError&) {
      ++rejected;
    }
  }
  CHECK(rejected > 1000);  // almost every corruption is caught, none crashes or throws anything else
  CHECK(accepted + rejected == 3000);
}
