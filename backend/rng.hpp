// Counter-based random numbers: value i of a draw is a hash of (seed, counter + i), so results
// do not depend on thread count or order, and the whole state is two integers (checkpointable).
#pragma once
#include <cstdint>

#include "backend/host_device.hpp"  // hash() and uniform_at() run on the GPU too: it draws the same numbers

namespace fbt {

struct Rng {
  uint64_t seed = 0;
  uint64_t counter = 0;

  explicit Rng(uint64_t s = 0) : seed(s) {}
  // splitmix64 of the pair
  FBT_HOST_DEVICE static uint64_t hash(uint64_t seed, uint64_t i) {
    uint64_t z = seed * 0x9E3779B97F4A7C15ull + i + 0x632BE59BD9B4E019ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    z = (z ^ (z >> 29)) * 0xBF58476D1CE4E5B9ull;  // a second round: seeds that differ by one decorrelate
    return z ^ (z >> 32);
  }
  // In [0, 1): the top 24 bits, exact in a float.
  FBT_HOST_DEVICE static float uniform_at(uint64_t seed, uint64_t i) {
    return float(hash(seed, i) >> 40) * (1.0f / 16777216.0f);
  }
  // Reserves n numbers; returns the first counter value (use with uniform_at(seed, base + k)).
  uint64_t take(uint64_t n) { uint64_t b = counter; counter += n; return b; }
  float uniform() { return uniform_at(seed, counter++); }
  float normal();                                            // Box-Muller on two uniforms
};

}  // namespace fbt
