#include "util/safetensors.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <xxhash.h>

namespace fbt {

namespace {
constexpr uint64_t kMaxHeader = 100000000;  // as the reference implementation

// The checksum fbt records: XXH3-64 of the header as JSON without the checksum entry (so that the
// metadata is covered too) followed by the data buffer, as 16 hex digits.
std::string checksum(const std::string& header_json, const uint8_t* data, size_t size) {
  XXH3_state_t* state = XXH3_createState();
  if (!state) throw std::bad_alloc();
  XXH3_64bits_reset(state);
  XXH3_64bits_update(state, header_json.data(), header_json.size());
  if (size) XXH3_64bits_update(state, data, size);
  const XXH64_hash_t h = XXH3_64bits_digest(state);
  XXH3_freeState(state);
  char hex[17];
  std::snprintf(hex, sizeof(hex), "%016llx", static_cast<unsigned long long>(h));
  return hex;
}
}  // namespace

size_t dtype_size(const std::string& t) {
  static const std::map<std::string, size_t> sizes = {{"F64", 8}, {"F32", 4}, {"F16", 2}, {"BF16", 2}, {"I64", 8},
                                                      {"I32", 4}, {"I16", 2}, {"I8", 1},  {"U64", 8},  {"U32", 4},
                                                      {"U16", 2}, {"U8", 1},  {"BOOL", 1}, {"F8_E4M3", 1}, {"F8_E5M2", 1}};
  auto it = sizes.find(t);
  return it == sizes.end() ? 0 : it->second;
}

int64_t StTensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

StTensor StTensor::from_f32(std::vector<int64_t> shape, const float* data) {
  StTensor t{"F32", std::move(shape), {}};
  t.bytes.resize(size_t(t.numel()) * 4);
  if (!t.bytes.empty()) std::memcpy(t.bytes.data(), data, t.bytes.size());
  return t;
}

StTensor StTensor::from_i32(std::vector<int64_t> shape, const int32_t* data) {
  StTensor t{"I32", std::move(shape), {}};
  t.bytes.resize(size_t(t.numel()) * 4);
  if (!t.bytes.empty()) std::memcpy(t.bytes.data(), data, t.bytes.size());
  return t;
}

std::vector<float> StTensor::to_f32(const std::string& what) const {
  if (dtype != "F32") throw SafeTensorsError(what + ": dtype " + dtype + ", expected F32");
  std::vector<float> out(static_cast<size_t>(numel()));
  if (!out.empty()) std::memcpy(out.data(), bytes.data(), bytes.size());
  return out;
}

std::vector<int32_t> StTensor::to_i32(const std::string& what) const {
  std::vector<int32_t> out(static_cast<size_t>(numel()));
  if (dtype == "I32") {
    if (!out.empty()) std::memcpy(out.data(), bytes.data(), bytes.size());
  } else if (dtype == "I64") {
    for (size_t i = 0; i < out.size(); ++i) {
      int64_t v;
      std::memcpy(&v, bytes.data() + 8 * i, 8);
      if (v < INT32_MIN || v > INT32_MAX) throw SafeTensorsError(what + ": value " + std::to_string(v) + " out of range");
      out[i] = int32_t(v);
    }
  } else {
    throw SafeTensorsError(what + ": dtype " + dtype + ", expected I32 or I64");
  }
  return out;
}

const StTensor& SafeTensors::at(const std::string& name) const {
  auto it = tensors.find(name);
  if (it == tensors.end()) throw SafeTensorsError("no tensor named '" + name + "'");
  return it->second;
}

SafeTensors SafeTensors::load(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw SafeTensorsError(path + ": cannot open: " + std::strerror(errno));
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return parse(bytes, path);
}

namespace {

// The header's JSON object, with duplicate top-level names caught (plain parsing keeps the last).
nlohmann::json parse_header(const std::vector<uint8_t>& file, const std::string& name, uint64_t& n) {
  auto fail = [&](const std::string& msg) { return SafeTensorsError(name + ": " + msg); };
  if (file.size() < 8) throw fail("file is " + std::to_string(file.size()) + " bytes, too short for a header length");
  n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | file[size_t(i)];
  if (n > kMaxHeader) throw fail("header length " + std::to_string(n) + " exceeds the 100000000-byte limit");
  if (n > file.size() - 8) throw fail("header length " + std::to_string(n) + " runs past the end of the file");
  if (n < 2 || file[8] != '{') throw fail("header does not start with '{'");
  std::set<std::string> seen;
  std::string dup;
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(
        file.begin() + 8, file.begin() + 8 + int64_t(n),
        [&](int depth, nlohmann::json::parse_event_t ev, nlohmann::json& parsed) {
          if (depth == 1 && ev == nlohmann::json::parse_event_t::key && !seen.insert(parsed.get<std::string>()).second)
            dup = parsed.get<std::string>();
          return true;
        });
  } catch (const nlohmann::json::exception& e) {
    throw fail(std::string("header is not valid JSON: ") + e.what());
  }
  if (!dup.empty()) throw fail("duplicate tensor name '" + dup + "'");
  if (!header.is_object()) throw fail("header is not a JSON object");
  return header;
}

// Where a tensor's bytes are in the data buffer.
struct Span {
  uint64_t begin, end;
  std::string name;
};

// One header entry, checked against the data buffer (`buffer` bytes at `data`).
StTensor parse_entry(const std::string& key, const nlohmann::json& val, const uint8_t* data, uint64_t buffer,
                     const std::string& name, Span& span) {
  auto bad = [&](const std::string& msg) { return SafeTensorsError(name + ": tensor '" + key + "': " + msg); };
  if (!val.is_object() || !val.contains("dtype") || !val.contains("shape") || !val.contains("data_offsets"))
    throw bad("entry needs dtype, shape and data_offsets");
  if (!val["dtype"].is_string()) throw bad("dtype is not a string");
  StTensor t;
  t.dtype = val["dtype"].get<std::string>();
  const size_t esize = dtype_size(t.dtype);
  if (!esize) throw bad("unknown dtype " + t.dtype);
  if (!val["shape"].is_array()) throw bad("shape is not a list");
  uint64_t elems = 1;
  for (auto& d : val["shape"]) {
    if (!d.is_number_unsigned()) throw bad("shape entries must be non-negative integers");
    const uint64_t dim = d.get<uint64_t>();
    // No tensor can hold more elements than the file has bytes; this also keeps the product from overflowing.
    if (dim > buffer && !(dim > 0 && elems == 0)) throw bad("shape entry " + std::to_string(dim) + " exceeds the file's size");
    elems = dim == 0 ? 0 : (elems > buffer / dim + 1 ? buffer + 1 : elems * dim);
    t.shape.push_back(int64_t(dim));
  }
  if (elems > buffer) throw bad("shape holds more elements than the data buffer has bytes");
  auto& off = val["data_offsets"];
  if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned())
    throw bad("data_offsets must be [begin, end]");
  const uint64_t b = off[0].get<uint64_t>(), e = off[1].get<uint64_t>();
  if (b > e || e > buffer)
    throw bad("data_offsets [" + std::to_string(b) + ", " + std::to_string(e) + "] outside the " +
              std::to_string(buffer) + "-byte data buffer");
  if (e - b != uint64_t(t.numel()) * esize)
    throw bad("shape and dtype need " + std::to_string(uint64_t(t.numel()) * esize) + " bytes, offsets give " +
              std::to_string(e - b));
  t.bytes.assign(data + b, data + e);
  span = {b, e, key};
  return t;
}

// The tensors must tile the data buffer exactly: no gap, no overlap, nothing left over.
void check_tiling(std::vector<Span> spans, uint64_t buffer, const std::string& name) {
  std::sort(spans.begin(), spans.end(), [](const Span& x, const Span& y) {
    return x.begin != y.begin ? x.begin < y.begin : x.end < y.end;
  });
  uint64_t at = 0;
  for (const Span& s : spans) {
    if (s.begin != at)
      throw SafeTensorsError(name + ": tensor '" + s.name + "' starts at " + std::to_string(s.begin) + ", expected " +
                             std::to_string(at) + (s.begin < at ? " (overlap)" : " (gap)"));
    at = s.end;
  }
  if (at != buffer)
    throw SafeTensorsError(name + ": the data buffer is " + std::to_string(buffer) + " bytes but the tensors cover " +
                           std::to_string(at));
}

}  // namespace

SafeTensors SafeTensors::parse(const std::vector<uint8_t>& file, const std::string& name) {
  uint64_t n = 0;
  const nlohmann::json header = parse_header(file, name, n);
  SafeTensors st;
  const uint64_t buffer = file.size() - 8 - n;
  std::vector<Span> spans;
  for (auto& [key, val] : header.items()) {
    if (key != "__metadata__") {
      spans.emplace_back();
      st.tensors.emplace(key, parse_entry(key, val, file.data() + 8 + n, buffer, name, spans.back()));
      continue;
    }
    if (!val.is_object()) throw SafeTensorsError(name + ": __metadata__ is not an object");
    for (auto& [mk, mv] : val.items()) {
      if (!mv.is_string()) throw SafeTensorsError(name + ": __metadata__." + mk + " is not a string");
      st.metadata[mk] = mv.get<std::string>();
    }
  }
  check_tiling(std::move(spans), buffer, name);

  const auto recorded = st.metadata.find(kChecksumKey);
  if (recorded != st.metadata.end()) {
    nlohmann::json covered = header;
    covered["__metadata__"].erase(kChecksumKey);
    if (covered["__metadata__"].empty()) covered.erase("__metadata__");
    if (checksum(covered.dump(), file.data() + 8 + n, buffer) != recorded->second)
      throw SafeTensorsError(name + ": checksum mismatch: the file is damaged (its bytes are not the ones fbt wrote)");
    st.metadata.erase(recorded);
    st.verified = true;
  }
  return st;
}

std::vector<uint8_t> SafeTensors::serialize() const {
  nlohmann::json header = nlohmann::json::object();
  std::map<std::string, std::string> meta = metadata;
  meta.erase(kChecksumKey);  // recomputed below
  if (!meta.empty()) header["__metadata__"] = meta;
  uint64_t at = 0;
  for (auto& [name, t] : tensors) {  // std::map: name order, offsets ascending
    if (t.bytes.size() != size_t(t.numel()) * dtype_size(t.dtype))
      throw SafeTensorsError("tensor '" + name + "': byte count does not match shape and dtype");
    header[name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {at, at + t.bytes.size()}}};
    at += t.bytes.size();
  }
  std::vector<uint8_t> data(at);
  size_t pos = 0;
  for (auto& [name, t] : tensors) {
    if (!t.bytes.empty()) std::memcpy(data.data() + pos, t.bytes.data(), t.bytes.size());
    pos += t.bytes.size();
  }
  header["__metadata__"][kChecksumKey] = checksum(header.dump(), data.data(), data.size());
  std::string h = header.dump();
  while (h.size() % 8) h += ' ';  // align the buffer
  std::vector<uint8_t> out(8 + h.size() + at);
  uint64_t n = h.size();
  for (int i = 0; i < 8; ++i) out[size_t(i)] = uint8_t(n >> (8 * i));
  std::memcpy(out.data() + 8, h.data(), h.size());
  if (at) std::memcpy(out.data() + 8 + h.size(), data.data(), data.size());
  return out;
}

void SafeTensors::save(const std::string& path) const {
  std::vector<uint8_t> bytes = serialize();
  write_file_atomic(path, bytes.data(), bytes.size());
}


}  // namespace fbt
