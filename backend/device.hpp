// Where memory lives, and the primitives every layer above uses: allocation, copies between and
// within devices, zeroing. Raw pointers and sizes only: this layer knows nothing of tensors or
// tapes. Devices are told apart here, in the ops' dispatch (ops/dispatch.hpp) and by the owners
// of device state (Tape, ParamStore, AdamW); nn/ and models/ never name a device.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <string>
#include <vector>

namespace fbt {

enum class Device { CPU, CUDA };

// "cpu" or "cuda"; anything else is an error naming the accepted values.
Device parse_device(const std::string& name);
const char* device_name(Device d);
// Whether tensors can live on d here: the CPU always; CUDA where fbt was built with it and a GPU
// (or the test emulation) is present. `why` says why not.
bool device_available(Device d, std::string* why = nullptr);
// The CPU kernels' vector instructions, as compiled: "avx512 (16 lanes)", "avx2 (8 lanes)" or
// "scalar". AVX2 and AVX-512 builds train the same weights bit for bit.
const char* cpu_vector_isa();
// Throws, naming the reason, when d is not available.
void require_device(Device d);

float* device_alloc(Device d, size_t n);  // n floats, 64-byte aligned, uninitialised; OutOfMemory if it cannot
// An allocation that failed, with its size and device (what() says both, and what_for when given);
// a std::bad_alloc, so code that handles that handles this. advice: what to change, when it is not
// a step's size (batch, bptt, memory) that the reporter names by default.
class OutOfMemory : public std::bad_alloc {
 public:
  OutOfMemory(size_t bytes, Device d, const std::string& what_for = "", std::string advice = "");
  const char* what() const noexcept override { return what_.c_str(); }
  const std::string& advice() const { return advice_; }

 private:
  std::string what_, advice_;
};
// The one-line message for a failed allocation: what ran out and what to change (a step's size,
// or the advice it carries). For the command line's error and the Python module's MemoryError.
std::string out_of_memory_message(const std::bad_alloc& e);
void device_free(Device d, void* p);
void fill_zero(Device d, float* p, size_t n);
void copy_bytes(void* dst, Device dst_dev, const void* src, Device src_dev, size_t bytes);
// rows x cols floats; row r at dst + r*dst_stride and src + r*src_stride (in floats).
void copy_rows(float* dst, int64_t dst_stride, Device dst_dev, const float* src, int64_t src_stride, Device src_dev,
               int64_t rows, int64_t cols);

// Floats owned on one device (parameter blocks, optimizer moments, kept projections).
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(Device d, size_t n);  // zeroed
  DeviceBuffer(const DeviceBuffer& o);  // a copy on the same device
  DeviceBuffer& operator=(const DeviceBuffer& o);
  DeviceBuffer(DeviceBuffer&&) = default;
  DeviceBuffer& operator=(DeviceBuffer&&) = default;
  float* data() const { return p_.get(); }
  size_t size() const { return n_; }
  Device device() const { return dev_; }
  void copy_from_host(const float* src, size_t n);  // n must equal size()
  void copy_to_host(float* dst) const;

 private:
  struct Free {
    Device d;
    void operator()(float* p) const { device_free(d, p); }
  };
  Device dev_ = Device::CPU;
  size_t n_ = 0;
  std::unique_ptr<float, Free> p_{nullptr, Free{Device::CPU}};
};

}  // namespace fbt
