// Central-difference gradient checks for ops and models.
// The scalar checked is L = sum(R * f(inputs)) with a fixed random R, so one backward gives the
// whole analytic gradient; each input element is then nudged by +-eps and L recomputed in double.
#pragma once
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "backend/rng.hpp"
#include "autograd/tape.hpp"

namespace fbt::testing {

inline size_t sz(int64_t n) { return static_cast<size_t>(n); }

inline void fill_normal(float* x, int64_t n, uint64_t seed, float scale = 1.f) {
  Rng r(seed);
  for (int64_t i = 0; i < n; ++i) x[i] = scale * r.normal();
}

// n token ids below V, drawn from seed.
inline std::vector<int32_t> tokens(int64_t n, uint64_t seed, int32_t V) {
  Rng r(seed);
  std::vector<int32_t> t;
  for (int64_t i = 0; i < n; ++i) t.push_back(int32_t(r.uniform() * float(V)) % V);
  return t;
}

inline Var random_leaf(const Shape& s, uint64_t seed, float scale = 1.f, bool requires_grad = true) {
  Var v = tape().leaf(s, requires_grad);
  fill_normal(v.data(), s.numel(), seed, scale);
  return v;
}

// Every element of `got` within tol of `want`, relative to 1 + |want| (one device against another).
inline void check_close(const std::vector<float>& got, const std::vector<float>& want, double tol = 2e-5) {
  REQUIRE(got.size() == want.size());
  double worst = 0;
  for (size_t i = 0; i < got.size(); ++i)
    worst = std::max(worst, std::abs(double(got[i]) - want[i]) / (1 + std::abs(double(want[i]))));
  INFO("worst relative difference " << worst);
  CHECK(worst < tol);
}

// A whole model's check: ||numeric - analytic|| / ||analytic|| over every value of `values`, the
// numeric gradient by central differences of `loss` (which reads the values as perturbed in place).
inline double parameter_grad_error(std::vector<float>& values, const std::vector<float>& analytic,
                                   const std::function<double()>& loss, double eps = 1e-2) {
  double diff2 = 0, a2 = 0;
  for (size_t i = 0; i < values.size(); ++i) {
    const float saved = values[i];
    values[i] = float(saved + eps);
    const double up = loss();
    values[i] = float(saved - eps);
    const double down = loss();
    values[i] = saved;
    const double numeric = (up - down) / (2 * eps);
    diff2 += (numeric - analytic[i]) * (numeric - analytic[i]);
    a2 += double(analytic[i]) * analytic[i];
  }
  return std::sqrt(diff2 / a2);
}

struct GradCheckResult {
  double max_abs_err = 0, rel_err = 0;  // rel_err = ||a - n|| / max(||a||, ||n||, tiny)
};

// f builds the output from `inputs` (called repeatedly with the same Vars, values perturbed in place).
inline GradCheckResult gradcheck(const std::function<Var()>& f, const std::vector<Var>& inputs, double eps = 1e-2,
                                 uint64_t seed = 99) {
  Var y = f();
  const int64_t ny = y.value().numel();
  std::vector<float> R(static_cast<size_t>(ny));
  fill_normal(R.data(), ny, seed);
  auto objective = [&]() {
    NoGradScope ng;
    Var out = f();
    double s = 0;
    for (int64_t i = 0; i < ny; ++i) s += double(R[size_t(i)]) * out.data()[i];
    return s;
  };
  tape().backward(y, Tensor{R.data(), y.shape(), Device::CPU});
  GradCheckResult res;
  double diff2 = 0, a2 = 0, n2 = 0;
  for (const Var& x : inputs) {
    Tensor g = tape().grad(x);
    REQUIRE(g.data != nullptr);
    std::vector<float> analytic(g.data, g.data + g.numel());
    for (int64_t i = 0; i < x.value().numel(); ++i) {
      float saved = x.data()[i];
      x.data()[i] = float(saved + eps);
      double up = objective();
      x.data()[i] = float(saved - eps);
      double down = objective();
      x.data()[i] = saved;
      double numeric = (up - down) / (2 * eps);
      double a = analytic[size_t(i)];
      diff2 += (a - numeric) * (a - numeric);
      a2 += a * a;
      n2 += numeric * numeric;
      res.max_abs_err = std::max(res.max_abs_err, std::abs(a - numeric));
    }
  }
  res.rel_err = std::sqrt(diff2) / std::max({std::sqrt(a2), std::sqrt(n2), 1e-12});
  return res;
}

// The tolerance used by every op check: loose enough for float32 central differences, tight
// enough that a transposed matrix or a factor of 2 (relative error >= ~0.3) fails.
constexpr double kGradTol = 5e-3;

#define CHECK_GRADS(f, inputs)                                              \
  do {                                                                      \
    auto _r = ::fbt::testing::gradcheck(f, inputs);                         \
    INFO("relative error " << _r.rel_err << ", max abs " << _r.max_abs_err); \
    CHECK(_r.rel_err < ::fbt::testing::kGradTol);                           \
  } while (0)

}  // namespace fbt::testing
