// check(cond, parts...): throws std::invalid_argument with the parts concatenated (any type
// with an operator<<; shapes print as [a, b], autograd/tensor.hpp). Shape errors name both shapes.
#pragma once
#include <sstream>
#include <stdexcept>

namespace fbt {

template <typename... Parts>
inline void check(bool cond, const Parts&... parts) {
  if (cond) return;
  std::ostringstream os;
  (os << ... << parts);
  throw std::invalid_argument(os.str());
}

}  // namespace fbt
