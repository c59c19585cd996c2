// check(cond, parts...): throws std::invalid_argument with the parts concatenated (any type
// with an operator<<; shapes print as [a, b], autograd/tensor.hpp). Shape errors name both shapes.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace fbt {

template <typename... Parts>
inline void check(bool cond, const Parts&... parts) {
  if (cond) return;
  std::ostringstream os;
  (os << ... << parts);
  throw std::invalid_argument(os.str());
}

// Text from a file we do not trust, safe to print or to quote: control characters become '?'.
inline std::string printable(std::string s) {
  for (char& ch : s)
    if (static_cast<unsigned char>(ch) < 0x20 || ch == 0x7f) ch = '?';
  return s;
}

}  // namespace fbt
