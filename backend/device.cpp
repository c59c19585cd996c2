#include "backend/device.hpp"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <cstdio>
#include <stdexcept>

#include "backend/cpu/simd.hpp"
#include "backend/cuda/kernels.hpp"

namespace fbt {

namespace {
constexpr size_t kAlign = 64;

cuda::CopyKind kind_of(Device dst, Device src) {
  if (dst == Device::CUDA && src == Device::CUDA) return cuda::CopyKind::DeviceToDevice;
  return dst == Device::CUDA ? cuda::CopyKind::HostToDevice : cuda::CopyKind::DeviceToHost;
}
}  // namespace

Device parse_device(const std::string& name) {
  if (name == "cpu") return Device::CPU;
  if (name == "cuda") return Device::CUDA;
  throw std::invalid_argument("unknown device '" + name + "' (expected cpu or cuda)");
}

const char* device_name(Device d) { return d == Device::CUDA ? "cuda" : "cpu"; }

bool device_available(Device d, std::string* why) { return d == Device::CPU || cuda::available(why); }

const char* cpu_vector_isa() {
  switch (cpu::simd::kLanes) {
    case 16: return "avx512 (16 lanes)";
    case 8: return "avx2 (8 lanes)";
    default: return "scalar";
  }
}

void require_device(Device d) {
  std::string why;
  if (!device_available(d, &why)) throw std::runtime_error(std::string("device ") + device_name(d) + " is not available: " + why);
}

OutOfMemory::OutOfMemory(size_t bytes, Device d, const std::string& what_for, std::string advice)
    : advice_(std::move(advice)) {
  char size[32];
  std::snprintf(size, sizeof size, "%.1f MB", double(bytes) / (1024.0 * 1024.0));
  what_ = std::string("could not allocate ") + size + " on the " + device_name(d) + (what_for.empty() ? "" : " for ") +
          what_for;
}

std::string out_of_memory_message(const std::bad_alloc& e) {
  const auto* oom = dynamic_cast<const OutOfMemory*>(&e);
  if (oom && !oom->advice().empty()) return std::string("out of memory: ") + e.what() + "; " + oom->advice();
  return std::string("out of memory") + (oom ? std::string(": ") + e.what() : "") +
         "; a step needs less with a smaller train.batch_size, bptt or model.mem_len, and in training with "
         "train.recompute: true or train.grad_accum: 2 or more";
}

float* device_alloc(Device d, size_t n) {
  if (d == Device::CUDA) {
    try {
      return cuda::alloc(n);
    } catch (const std::bad_alloc&) {  // the emulated device's host memory
      throw OutOfMemory(n * sizeof(float), d);
    }
  }
  const size_t bytes = (std::max<size_t>(n, 1) * sizeof(float) + kAlign - 1) / kAlign * kAlign;
  void* p = std::aligned_alloc(kAlign, bytes);
  if (!p) throw OutOfMemory(bytes, d);
  return static_cast<float*>(p);
}

void device_free(Device d, void* p) {
  if (!p) return;
  if (d == Device::CUDA) cuda::free(p);
  else std::free(p);
}

void fill_zero(Device d, float* p, size_t n) {
  if (!n) return;
  if (d == Device::CUDA) return cuda::memset_zero(p, n);
  constexpr size_t kChunk = size_t(1) << 18;  // floats: large blocks (a step's gradients) on every thread
  const int64_t chunks = int64_t((n + kChunk - 1) / kChunk);
#pragma omp parallel for if (chunks > 4)
  for (int64_t c = 0; c < chunks; ++c)
    std::memset(p + size_t(c) * kChunk, 0, sizeof(float) * std::min(kChunk, n - size_t(c) * kChunk));
}

void copy_bytes(void* dst, Device dst_dev, const void* src, Device src_dev, size_t bytes) {
  if (!bytes) return;
  if (dst_dev == Device::CPU && src_dev == Device::CPU) std::memcpy(dst, src, bytes);
  else cuda::copy(dst, src, bytes, kind_of(dst_dev, src_dev));
}

void copy_rows(float* dst, int64_t dst_stride, Device dst_dev, const float* src, int64_t src_stride, Device src_dev,
               int64_t rows, int64_t cols) {
  if (rows <= 0 || cols <= 0) return;
  if (dst_dev == Device::CPU && src_dev == Device::CPU) {
    constexpr int64_t kParallelFloats = int64_t(1) << 18;  // a megabyte: a model's memory rows, a layer's state
#pragma omp parallel for if (rows > 1 && rows * cols >= kParallelFloats)
    for (int64_t r = 0; r < rows; ++r) std::memcpy(dst + r * dst_stride, src + r * src_stride, sizeof(float) * size_t(cols));
    return;
  }
  cuda::copy_2d(dst, sizeof(float) * size_t(dst_stride), src, sizeof(float) * size_t(src_stride),
                sizeof(float) * size_t(cols), size_t(rows), kind_of(dst_dev, src_dev));
}

DeviceBuffer::DeviceBuffer(Device d, size_t n) : dev_(d), n_(n), p_(device_alloc(d, n), Free{d}) { fill_zero(d, data(), n); }

DeviceBuffer::DeviceBuffer(const DeviceBuffer& o) : dev_(o.dev_), n_(o.n_), p_(device_alloc(o.dev_, o.n_), Free{o.dev_}) {
  copy_bytes(data(), dev_, o.data(), o.dev_, sizeof(float) * n_);
}

DeviceBuffer& DeviceBuffer::operator=(const DeviceBuffer& o) {
  if (this != &o) *this = DeviceBuffer(o);
  return *this;
}

void DeviceBuffer::copy_from_host(const float* src, size_t n) {
  if (n != n_) throw std::invalid_argument("DeviceBuffer: " + std::to_string(n) + " values for a buffer of " + std::to_string(n_));
  copy_bytes(data(), dev_, src, Device::CPU, sizeof(float) * n);
}

void DeviceBuffer::copy_to_host(float* dst) const { copy_bytes(dst, Device::CPU, data(), dev_, sizeof(float) * n_); }

}  // namespace fbt
