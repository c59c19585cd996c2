// check(cond, parts...): throws std::invalid_argument with the parts concatenated (shapes print
// as [a, b]). Shape errors name both shapes.
#pragma once
#include <sstream>
#include <stdexcept>

#include "autograd/tensor.hpp"

namespace fbt {

inline std::ostream& operator<<(std::ostream& os, const Shape& s) { return os << s.str(); }

template <typename... Parts>
inline void check(bool cond, const Parts&... parts) {
  if (cond) return;
  std::ostringstream os;
  (os << ... << parts);
  throw std::invalid_argument(os.str());
}

}  // namespace fbt
