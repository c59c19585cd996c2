// safetensors files: an 8-byte little-endian header length N, N bytes of JSON header, then the
// data buffer, which the entries (sorted by offset) must tile exactly. Everything is validated
// on load; errors name the file and the offending tensor. Saves are atomic (temp + rename).
// Every file fbt writes records a checksum of its header and data in __metadata__ (kChecksumKey);
// loading a file that has one verifies it, so a damaged file is an error, never used.
#pragma once
#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "util/files.hpp"

namespace fbt {

struct SafeTensorsError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct StTensor {
  std::string dtype;            // "F32", "I64", ...
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;   // little-endian, row-major

  int64_t numel() const;
  static StTensor from_f32(std::vector<int64_t> shape, const float* data);
  static StTensor from_i32(std::vector<int64_t> shape, const int32_t* data);
  // Converted copies; throw if the dtype does not fit (F32 only / I32 or I64).
  std::vector<float> to_f32(const std::string& what) const;
  std::vector<int32_t> to_i32(const std::string& what) const;
};

struct SafeTensors {
  static constexpr const char* kChecksumKey = "fbt_checksum_xxh3";

  std::map<std::string, StTensor> tensors;
  std::map<std::string, std::string> metadata;  // without the checksum, which parse() checks and serialize() writes
  bool verified = false;  // parsed from a file whose recorded checksum matched (false: it recorded none)

  static SafeTensors load(const std::string& path);
  static SafeTensors parse(const std::vector<uint8_t>& file, const std::string& name);
  std::vector<uint8_t> serialize() const;
  void save(const std::string& path) const;  // atomic

  bool has(const std::string& name) const { return tensors.count(name) != 0; }
  const StTensor& at(const std::string& name) const;
};

size_t dtype_size(const std::string& dtype);  // 0 for an unknown dtype


}  // namespace fbt
