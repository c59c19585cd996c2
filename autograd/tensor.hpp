// A float32 row-major tensor view: a pointer, a shape and a device tag. It owns nothing;
// storage comes from an Arena (activations) or a ParamStore (parameters and gradients).
// Shape legend used across the project: B batch, T steps, D width, H heads, Dh head width,
// I = H*Dh, M memory rows, V vocabulary, N flattened rows, C columns.
#pragma once
#include <array>
#include <cstdint>
#include <initializer_list>
#include <ostream>
#include <stdexcept>
#include <string>
#include <vector>

#include "backend/device.hpp"

namespace fbt {

struct Shape {
  static constexpr int kMaxDims = 4;
  std::array<int64_t, kMaxDims> d{};
  int nd = 0;

  Shape() = default;
  Shape(std::initializer_list<int64_t> dims) {
    if (dims.size() > kMaxDims) throw std::invalid_argument("Shape: more than 4 dimensions");
    for (int64_t v : dims) d[nd++] = v;
  }
  int64_t numel() const {
    int64_t n = 1;
    for (int i = 0; i < nd; ++i) n *= d[i];
    return n;
  }
  int64_t operator[](int i) const { return d[i < 0 ? nd + i : i]; }
  int64_t& operator[](int i) { return d[i < 0 ? nd + i : i]; }
  bool operator==(const Shape& o) const {
    if (nd != o.nd) return false;
    for (int i = 0; i < nd; ++i)
      if (d[i] != o.d[i]) return false;
    return true;
  }
  bool operator!=(const Shape& o) const { return !(*this == o); }
  // Product of all dimensions but the last: the row count of a (N, C) view.
  int64_t rows() const { return nd == 0 ? 1 : numel() / d[nd - 1]; }
  int64_t cols() const { return nd == 0 ? 1 : d[nd - 1]; }
  std::vector<int64_t> dims() const { return std::vector<int64_t>(d.begin(), d.begin() + nd); }
  std::string str() const {
    std::string s = "[";
    for (int i = 0; i < nd; ++i) s += (i ? ", " : "") + std::to_string(d[i]);
    return s + "]";
  }
};

inline std::ostream& operator<<(std::ostream& os, const Shape& s) { return os << s.str(); }

struct Tensor {
  float* data = nullptr;
  Shape shape;
  Device device = Device::CPU;

  bool defined() const { return data != nullptr || shape.numel() == 0; }
  int64_t numel() const { return shape.numel(); }
  int64_t rows() const { return shape.rows(); }
  int64_t cols() const { return shape.cols(); }
};

// The values of a tensor on any device, on the host.
inline std::vector<float> to_host(const Tensor& t) {
  std::vector<float> h(size_t(t.numel()));
  copy_bytes(h.data(), Device::CPU, t.data, t.device, sizeof(float) * h.size());
  return h;
}

}  // namespace fbt
