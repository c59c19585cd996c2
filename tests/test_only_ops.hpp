// Ops the library does not ship (no model calls them), kept for the tests of the tape and the
// profile: naive CPU loops with a recorded backward that accumulates.
#pragma once
#include <cmath>

#include "backend/profile.hpp"
#include "ops/ops.hpp"
#include "util/check.hpp"

namespace fbt::testing {

// Elementwise product of same-shape a and b.
inline Var mul(Var a, Var b) {
  const profile::Scope prof("mul", profile::Phase::Forward);
  check(a.shape() == b.shape(), "mul: ", a.shape(), " vs ", b.shape());
  const int64_t n = a.value().numel();
  Var y = tape().output(a.shape(), {a, b});
  for (int64_t i = 0; i < n; ++i) y.data()[i] = a.data()[i] * b.data()[i];
  if (y.requires_grad())
    tape().record("mul", y, [=] {
      float* da = tape().grad(a).data;
      float* db = tape().grad(b).data;
      for (int64_t i = 0; i < n; ++i) {
        if (da) da[i] += y.grad().data[i] * b.data()[i];
        if (db) db[i] += y.grad().data[i] * a.data()[i];
      }
    });
  return y;
}

// Exact GELU, x Phi(x), elementwise.
inline Var gelu(Var x) {
  const profile::Scope prof("gelu", profile::Phase::Forward);
  const int64_t n = x.value().numel();
  Var y = tape().output(x.shape(), {x});
  for (int64_t i = 0; i < n; ++i) y.data()[i] = float(0.5 * x.data()[i] * (1 + std::erf(x.data()[i] / std::sqrt(2.0))));
  if (y.requires_grad())
    tape().record("gelu", y, [=] {
      float* dx = tape().grad(x).data;
      for (int64_t i = 0; i < n; ++i) {
        const double v = x.data()[i];
        const double grad = 0.5 * (1 + std::erf(v / std::sqrt(2.0))) + v * std::exp(-0.5 * v * v) / std::sqrt(2 * M_PI);
        dx[i] += float(y.grad().data[i] * grad);
      }
    });
  return y;
}

}  // namespace fbt::testing
