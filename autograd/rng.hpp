// Counter-based random numbers: value i of a draw is a hash of (seed, counter + i), so results
// do not depend on thread count or order, and the whole state is two integers (checkpointable).
#pragma once
#include <cstdint>

namespace fbt {

struct Rng {
  uint64_t seed = 0;
  uint64_t counter = 0;

  explicit Rng(uint64_t s = 0) : seed(s) {}
  static uint64_t hash(uint64_t seed, uint64_t i);           // splitmix64 of the pair
  static float uniform_at(uint64_t seed, uint64_t i);       // in [0, 1)
  // Reserves n numbers; returns the first counter value (use with uniform_at(seed, base + k)).
  uint64_t take(uint64_t n) { uint64_t b = counter; counter += n; return b; }
  float uniform() { return uniform_at(seed, counter++); }
  float normal();                                            // Box-Muller on two uniforms
};

}  // namespace fbt
