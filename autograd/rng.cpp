#include "autograd/rng.hpp"

#include <cmath>

namespace fbt {

uint64_t Rng::hash(uint64_t seed, uint64_t i) {
  uint64_t z = seed * 0x9E3779B97F4A7C15ull + i + 0x632BE59BD9B4E019ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  z = (z ^ (z >> 29)) * 0xBF58476D1CE4E5B9ull;  // a second round: seeds that differ by one decorrelate
  return z ^ (z >> 32);
}

float Rng::uniform_at(uint64_t seed, uint64_t i) { return float(hash(seed, i) >> 40) * (1.0f / 16777216.0f); }

float Rng::normal() {
  double u1 = (double(hash(seed, counter) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
  double u2 = double(hash(seed, counter + 1) >> 11) * (1.0 / 9007199254740992.0);
  counter += 2;
  return float(std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2));
}

}  // namespace fbt
