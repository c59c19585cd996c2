// Memory detachment policies (MODEL.md, "Training across calls"): which memory vectors written
// during a call a window may differentiate through. Policies change gradients, never values.
#pragma once
#include <cstdint>
#include <string>

namespace fbt {

struct DetachPolicy {
  enum class Kind { None, Every, Horizon, All };
  Kind kind = Kind::None;
  int64_t n = 0;  // N of every:N / horizon:N

  // "none", "every:N", "horizon:N", "all"; N >= 1 and a multiple of seq_len.
  // Throws std::invalid_argument with the reason.
  static DetachPolicy parse(const std::string& text, int64_t seq_len);

  // For the window starting at call step s: memory vectors written at call steps < the result
  // are constants for it (vectors carried into the call are always constants).
  int64_t first_differentiable(int64_t s) const;
  std::string str() const;
};

}  // namespace fbt
