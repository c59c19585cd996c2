// Bump allocator for the activations and gradients of one step. Pointers stay valid until
// reset(); reset() keeps every block, and the next step fills them again in order, so a steady
// training loop allocates (and page-faults) nothing after its first step. Its blocks live on one
// device (backend/device.hpp).
#pragma once
#include <cstddef>
#include <memory>
#include <vector>

#include "backend/device.hpp"
#include "autograd/tensor.hpp"

namespace fbt {

class Arena {
 public:
  explicit Arena(Device device = Device::CPU, size_t initial_bytes = size_t(1) << 20);
  Device device() const { return device_; }
  float* alloc_floats(size_t n);            // 64-byte aligned, uninitialised
  Tensor alloc(const Shape& s);             // uninitialised
  Tensor zeros(const Shape& s);
  void reset();
  size_t used_bytes() const { return used_total_; }
  size_t capacity_bytes() const;

 private:
  struct Free {
    Device d;
    void operator()(std::byte* p) const { device_free(d, p); }
  };
  struct Block {
    std::unique_ptr<std::byte, Free> mem;
    size_t size = 0, used = 0;
  };
  void add_block(size_t min_bytes);
  Device device_;
  std::vector<Block> blocks_;
  size_t current_ = 0;  // the block allocations come from; earlier ones are full for this step
  size_t used_total_ = 0;
};

}  // namespace fbt
