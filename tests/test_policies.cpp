// Detachment policies (MODEL.md): parsing, errors, and which memory vectors a window may
// differentiate through. How they change the model's gradients is in test_model.cpp.
#include <doctest/doctest.h>

#include <stdexcept>

#include "models/detach_policy.hpp"

using namespace fbt;

TEST_CASE("detach policy: parsing and errors") {
  CHECK(DetachPolicy::parse("none", 1).kind == DetachPolicy::Kind::None);
  CHECK(DetachPolicy::parse("every:64", 32).n == 64);
  CHECK(DetachPolicy::parse("horizon:8", 1).str() == "horizon:8");
  CHECK_THROWS_WITH_AS(DetachPolicy::parse("evrey:4", 1), doctest::Contains("unknown detach policy"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(DetachPolicy::parse("every:5", 2), doctest::Contains("not a multiple of seq_len"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(DetachPolicy::parse("horizon:0", 1), doctest::Contains(">= 1"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(DetachPolicy::parse("horizon:x", 1), doctest::Contains("not an integer"), std::invalid_argument);
  CHECK(DetachPolicy::parse("every:4", 1).first_differentiable(9) == 8);
  CHECK(DetachPolicy::parse("horizon:4", 1).first_differentiable(9) == 5);
  CHECK(DetachPolicy::parse("all", 1).first_differentiable(9) == 9);
}
