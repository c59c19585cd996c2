#include "autograd/arena.hpp"

#include <algorithm>
#include <cstring>

namespace fbt {

namespace {
constexpr size_t kAlign = 64;
size_t round_up(size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }
}  // namespace

Arena::Arena(Device device, size_t initial_bytes) : device_(device) { add_block(initial_bytes); }

void Arena::add_block(size_t min_bytes) {
  Block b;
  b.size = round_up(min_bytes) + kAlign;
  b.mem = std::unique_ptr<std::byte, Free>(reinterpret_cast<std::byte*>(device_alloc(device_, b.size / sizeof(float))),
                                          Free{device_});
  blocks_.push_back(std::move(b));
}

float* Arena::alloc_floats(size_t n) {
  const size_t bytes = round_up(std::max<size_t>(n, 1) * sizeof(float));
  for (;;) {
    Block& b = blocks_[current_];
    const auto base = reinterpret_cast<uintptr_t>(b.mem.get());
    const size_t offset = round_up(base + b.used) - base;
    if (offset + bytes <= b.size) {
      b.used = offset + bytes;
      used_total_ += bytes;
      return reinterpret_cast<float*>(b.mem.get() + offset);
    }
    if (current_ + 1 == blocks_.size()) add_block(std::max(bytes, b.size * 2));
    ++current_;
  }
}

Tensor Arena::alloc(const Shape& s) { return Tensor{alloc_floats(size_t(s.numel())), s, device_}; }

Tensor Arena::zeros(const Shape& s) {
  Tensor t = alloc(s);
  fill_zero(device_, t.data, size_t(s.numel()));
  return t;
}

size_t Arena::capacity_bytes() const {
  size_t c = 0;
  for (auto& b : blocks_) c += b.size;
  return c;
}

void Arena::reset() {
  for (Block& b : blocks_) b.used = 0;
  current_ = 0;
  used_total_ = 0;
}

}  // namespace fbt
