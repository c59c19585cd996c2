#include "models/detach_policy.hpp"

#include <stdexcept>

namespace fbt {

DetachPolicy DetachPolicy::parse(const std::string& text, int64_t seq_len) {
  const std::string hint = " (expected none, all, every:N or horizon:N)";
  if (text == "none") return {Kind::None, 0};
  if (text == "all") return {Kind::All, 0};
  const size_t colon = text.find(':');
  const std::string name = text.substr(0, colon);
  if (colon == std::string::npos || (name != "every" && name != "horizon"))
    throw std::invalid_argument("unknown detach policy '" + text + "'" + hint);
  const std::string num = text.substr(colon + 1);
  int64_t n = 0;
  try {
    size_t used = 0;
    n = std::stoll(num, &used);
    if (used != num.size()) throw std::invalid_argument(num);
  } catch (const std::exception&) {
    throw std::invalid_argument("detach policy '" + text + "': '" + num + "' is not an integer" + hint);
  }
  if (n < 1) throw std::invalid_argument("detach policy '" + text + "': N must be >= 1");
  if (n % seq_len != 0)
    throw std::invalid_argument("detach policy '" + text + "': N = " + std::to_string(n) +
                                " is not a multiple of seq_len = " + std::to_string(seq_len));
  return {name == "every" ? Kind::Every : Kind::Horizon, n};
}

int64_t DetachPolicy::first_differentiable(int64_t s) const {
  switch (kind) {
    case Kind::None: return 0;
    case Kind::All: return s;
    case Kind::Every: return s / n * n;
    case Kind::Horizon: return s - n;
  }
  return 0;
}

std::string DetachPolicy::str() const {
  switch (kind) {
    case Kind::None: return "none";
    case Kind::All: return "all";
    case Kind::Every: return "every:" + std::to_string(n);
    case Kind::Horizon: return "horizon:" + std::to_string(n);
  }
  return "none";
}

}  // namespace fbt
