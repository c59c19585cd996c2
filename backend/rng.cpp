#include "backend/rng.hpp"

#include <cmath>

namespace fbt {

float Rng::normal() {
  double u1 = (double(hash(seed, counter) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
  double u2 = double(hash(seed, counter + 1) >> 11) * (1.0 / 9007199254740992.0);
  counter += 2;
  return float(std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2));
}

}  // namespace fbt
