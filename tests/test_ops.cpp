// Central-difference gradient checks for every op, on odd shapes (N=3, C=7, N=1).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>

#include "gradcheck.hpp"
#include "ops/ops.hpp"
#include "test_only_ops.hpp"

using namespace fbt;
using fbt::testing::mul;
using fbt::testing::random_leaf;

TEST_CASE("grad: linear with bias") {
  tape().reset();
  Var x = random_leaf({3, 7}, 1), W = random_leaf({5, 7}, 2), b = random_leaf({5}, 3);
  CHECK_GRADS([&] { return linear(x, W, b); }, (std::vector<Var>{x, W, b}));
}

TEST_CASE("grad: linear without bias on one row of a 3-D input") {
  tape().reset();
  Var x = random_leaf({1, 1, 7}, 4), W = random_leaf({3, 7}, 5);
  CHECK_GRADS([&] { return linear(x, W); }, (std::vector<Var>{x, W}));
}

TEST_CASE("grad: add mul and scale") {
  tape().reset();
  Var a = random_leaf({3, 7}, 8), b = random_leaf({3, 7}, 9);
  CHECK_GRADS([&] { return scale(mul(add(a, b), b), -1.5f); }, (std::vector<Var>{a, b}));
}

TEST_CASE("grad: mask_rows passes kept rows only") {
  tape().reset();
  Var x = random_leaf({3, 7}, 10);
  std::vector<uint8_t> keep{1, 0, 1};
  CHECK_GRADS([&] { return mask_rows(x, keep); }, (std::vector<Var>{x}));
  tape().reset();
  Var x2 = random_leaf({3, 7}, 10);
  Var y = mask_rows(x2, keep);
  for (int c = 0; c < 7; ++c) CHECK(y.data()[7 + c] == 0.f);
}

TEST_CASE("grad: layernorm") {
  tape().reset();
  Var x = random_leaf({3, 7}, 11), w = random_leaf({7}, 12), b = random_leaf({7}, 13);
  CHECK_GRADS([&] { return layernorm(x, w, b); }, (std::vector<Var>{x, w, b}));
}

TEST_CASE("grad: layernorm on a single row") {
  tape().reset();
  Var x = random_leaf({1, 5}, 14, 3.f), w = random_leaf({5}, 15), b = random_leaf({5}, 16);
  CHECK_GRADS([&] { return layernorm(x, w, b); }, (std::vector<Var>{x, w, b}));
}

TEST_CASE("grad: geglu's gate is the exact gelu") {
  tape().reset();
  Var u = tape().leaf({1, 6});  // values 1, gates 1, -2, 0.5: the output is gelu(gate)
  const float in[6] = {1.f, 1.f, 1.f, 1.f, -2.f, 0.5f};
  std::copy(in, in + 6, u.data());
  Var y = geglu(u);
  CHECK(y.data()[0] == doctest::Approx(0.8413447460685429).epsilon(1e-6));
  CHECK(y.data()[1] == doctest::Approx(-0.04550026389635842).epsilon(1e-5));
  CHECK(y.data()[2] == doctest::Approx(0.34573123063700656).epsilon(1e-6));
}

TEST_CASE("grad: geglu") {
  tape().reset();
  Var u = random_leaf({3, 14}, 18, 1.5f);
  CHECK_GRADS([&] { return geglu(u); }, (std::vector<Var>{u}));
}

TEST_CASE("grad: embedding with repeated ids scatter-adds") {
  tape().reset();
  Var W = random_leaf({5, 7}, 20);
  int32_t ids[6] = {1, 4, 1, 0, 1, 3};
  CHECK_GRADS([&] { return embedding(W, ids, Shape{2, 3}); }, (std::vector<Var>{W}));
  Var y = embedding(W, ids, Shape{2, 3});
  CHECK(y.shape() == Shape{2, 3, 7});
  CHECK(y.data()[2 * 7 + 3] == W.data()[1 * 7 + 3]);
}

TEST_CASE("grad: cross entropy fused with the logits") {
  tape().reset();
  Var logits = random_leaf({3, 7}, 21, 2.f);
  int32_t tg[3] = {6, 0, 3};
  CHECK_GRADS([&] { return cross_entropy(logits, tg); }, (std::vector<Var>{logits}));
  Var l = cross_entropy(logits, tg);
  double expect = 0;
  for (int r = 0; r < 3; ++r) {
    double s = 0;
    for (int c = 0; c < 7; ++c) s += std::exp(double(logits.data()[r * 7 + c]));
    expect += std::log(s) - logits.data()[r * 7 + tg[r]];
  }
  CHECK(l.data()[0] == doctest::Approx(expect / 3).epsilon(1e-6));
}

TEST_CASE("grad: weighted sum with softmaxed weights") {
  tape().reset();
  Var w = random_leaf({4}, 22), a = random_leaf({3, 7}, 23), b = random_leaf({3, 7}, 24), c = random_leaf({3, 7}, 25),
      d = random_leaf({3, 7}, 26);
  CHECK_GRADS([&] { return weighted_sum(w, {a, b, c, d}); }, (std::vector<Var>{w, a, b, c, d}));
}

TEST_CASE("grad: concat and slice along the middle axis") {
  tape().reset();
  Var a = random_leaf({2, 3, 5}, 27), b = random_leaf({2, 1, 5}, 28);
  CHECK_GRADS([&] { return slice(concat({a, b, a}, 1), 1, 2, 4); }, (std::vector<Var>{a, b}));
  Var y = concat({a, b}, 1);
  CHECK(y.shape() == Shape{2, 4, 5});
  CHECK(y.data()[(1 * 4 + 3) * 5 + 2] == b.data()[5 + 2]);
}

TEST_CASE("grad: dropout with a fixed mask") {
  tape().reset();
  Var x = random_leaf({3, 7}, 29);
  CHECK_GRADS(
      [&] {
        Rng r(7);  // same mask each call
        return dropout(x, 0.3f, r);
      },
      (std::vector<Var>{x}));
  Rng r(7);
  Var y = dropout(x, 0.3f, r);
  int zeros = 0;
  for (int i = 0; i < 21; ++i) {
    if (y.data()[i] == 0.f) ++zeros;
    else CHECK(y.data()[i] == doctest::Approx(x.data()[i] / 0.7f));
  }
  CHECK(zeros > 0);
  CHECK(zeros < 21);
}

namespace {
// Bucket table for n queries over M memory rows then n local rows (the model's layout).
std::vector<int32_t> window_table(int64_t n, int64_t M, int64_t nb) {
  std::vector<int32_t> t;
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < M; ++j) t.push_back(int32_t((i + M - j) % nb));
    for (int64_t j = 0; j < n; ++j) t.push_back(j < i ? int32_t((i - j) % nb) : -1);
  }
  return t;
}
}  // namespace

TEST_CASE("grad: attention over memory and window segments with bias") {
  tape().reset();
  const int64_t B = 2, n = 3, H = 2, I = H * 3, M = 4;
  Var q = random_leaf({B, n, I}, 30), mem = random_leaf({B, M + 2, 2 * I}, 31), loc = random_leaf({B, n, 2 * I}, 32),
      bias = random_leaf({5, H}, 33);
  auto table = window_table(n, M, 5);
  auto f = [&] { return attention(q, {{mem, 1, M}, {loc, 0, n}}, table, bias, H); };
  CHECK_GRADS(f, (std::vector<Var>{q, mem, loc, bias}));
}

TEST_CASE("grad: attention query with no visible key is zero") {
  tape().reset();
  const int64_t B = 1, n = 3, H = 1, I = 7;
  Var q = random_leaf({B, n, I}, 34), loc = random_leaf({B, n, 2 * I}, 35), bias = random_leaf({4, H}, 36);
  auto table = window_table(n, 0, 4);  // query 0 sees nothing
  auto f = [&] { return attention(q, {{loc, 0, n}}, table, bias, H); };
  CHECK_GRADS(f, (std::vector<Var>{q, loc, bias}));
  Var o = attention(q, {{loc, 0, n}}, table, bias, H);
  for (int c = 0; c < I; ++c) CHECK(o.data()[c] == 0.f);
  // query 1 sees only key 0: its output is value 0 exactly
  for (int c = 0; c < I; ++c) CHECK(o.data()[I + c] == doctest::Approx(loc.data()[I + c]));
}

TEST_CASE("grad: attention with dropout and without bias") {
  tape().reset();
  const int64_t B = 3, n = 1, H = 2, I = 4, M = 5;
  Var q = random_leaf({B, n, I}, 37), mem = random_leaf({B, M, 2 * I}, 38);
  std::vector<int32_t> table(size_t(M), 0);
  CHECK_GRADS(
      [&] {
        Rng r(3);
        return attention(q, {{mem, 0, M}}, table, Var(), H, 0.4f, &r);
      },
      (std::vector<Var>{q, mem}));
}

TEST_CASE("grad: memory projection into the key value cache") {
  tape().reset();
  const int64_t B = 2, n = 2, D = 5, I = 4, R = 3;
  Var mem = random_leaf({B, n, D}, 40), w = random_leaf({D}, 41), b = random_leaf({D}, 42),
      P = random_leaf({2 * I, D}, 43), q = random_leaf({B, 1, I}, 44);
  auto f = [&](bool first_row_constant) {
    Var cache = tape().leaf({B, R, 2 * I});
    Var diff = tape().alias(cache, true), cnst = tape().alias(cache, true);
    project_memory(mem, w, b, {{P, diff, cnst}}, 1);
    return attention(q, {{first_row_constant ? cnst : diff, 1, 1}, {diff, 2, 1}}, {0, 0}, Var(), 2);
  };
  // Every row differentiable: the memory gets its full gradient.
  CHECK_GRADS([&] { return f(false); }, (std::vector<Var>{mem, w, b, P, q}));
  // A row read as a constant still trains the projection and the norm.
  tape().zero_grad();
  CHECK_GRADS([&] { return f(true); }, (std::vector<Var>{w, b, P, q}));
}

TEST_CASE("grad: memory projection into two caches shares one norm") {
  tape().reset();
  const int64_t B = 2, n = 2, D = 5, I = 4, R = 2;
  Var mem = random_leaf({B, n, D}, 60), w = random_leaf({D}, 61), b = random_leaf({D}, 62),
      P1 = random_leaf({2 * I, D}, 63), P2 = random_leaf({2 * I, D}, 64), q = random_leaf({B, 1, I}, 65);
  auto f = [&] {
    Var s1 = tape().leaf({B, R, 2 * I}), s2 = tape().leaf({B, R, 2 * I});
    KVCache c1{P1, tape().alias(s1, true), tape().alias(s1, true)}, c2{P2, tape().alias(s2, true), tape().alias(s2, true)};
    project_memory(mem, w, b, {c1, c2}, 0);
    return add(attention(q, {{c1.cnst, 0, 1}, {c1.diff, 1, 1}}, {0, 0}, Var(), 2),
               attention(q, {{c2.diff, 0, 2}}, {0, 0}, Var(), 2));
  };
  CHECK_GRADS(f, (std::vector<Var>{w, b, P1, P2, q}));
}

TEST_CASE("grad: memory projection treats constant rows as constants") {
  // Fused op against the same math composed from primitives with an explicit detach.
  const int64_t B = 2, n = 2, D = 5, I = 4, R = 2;
  std::vector<float> fused, composed;
  for (int variant = 0; variant < 2; ++variant) {
    tape().reset();
    Var mem = random_leaf({B, n, D}, 50), w = random_leaf({D}, 51), b = random_leaf({D}, 52),
        P = random_leaf({2 * I, D}, 53), q = random_leaf({B, 1, I}, 54);
    Var out;
    if (variant == 0) {
      Var cache = tape().leaf({B, R, 2 * I});
      Var diff = tape().alias(cache, true), cnst = tape().alias(cache, true);
      project_memory(mem, w, b, {{P, diff, cnst}}, 0);
      out = attention(q, {{cnst, 0, 1}, {diff, 1, 1}}, {0, 0}, Var(), 2);
    } else {
      Var kd = linear(layernorm(mem, w, b), P), kc = linear(layernorm(detach(mem), w, b), P);
      out = attention(q, {{kc, 0, 1}, {kd, 1, 1}}, {0, 0}, Var(), 2);
    }
    std::vector<float> seed(size_t(out.value().numel()), 1.f);
    tape().backward(out, Tensor{seed.data(), out.shape(), Device::CPU});
    auto& dst = variant == 0 ? fused : composed;
    for (Var v : {mem, w, b, P, q}) dst.insert(dst.end(), tape().grad(v).data, tape().grad(v).data + v.value().numel());
  }
  REQUIRE(fused.size() == composed.size());
  for (size_t i = 0; i < fused.size(); ++i) CHECK(fused[i] == doctest::Approx(composed[i]).epsilon(1e-5));
}

TEST_CASE("grad: memory projection of constant memory vectors still trains the projection and the norm") {
  // A received state: the memory vectors need no gradient, which takes the path that gets P's and
  // the norm's gradients from g^T xhat (ops/attention.cpp). Finite differences, one and two
  // caches, rows read through both views; then equal to the general path's gradients.
  const int64_t B = 2, n = 3, D = 5, I = 4, R = 4;
  auto run = [&](bool mem_grad, int caches_n, bool check_fd) {
    tape().reset();
    Var mem = random_leaf({B, n, D}, 70, 1.f, mem_grad), w = random_leaf({D}, 71), b = random_leaf({D}, 72),
        P1 = random_leaf({2 * I, D}, 73), P2 = random_leaf({2 * I, D}, 74), q = random_leaf({B, 2, I}, 75);
    auto f = [&] {
      std::vector<KVCache> cs;
      for (int k = 0; k < caches_n; ++k) {
        Var st = tape().leaf({B, R, 2 * I});
        cs.push_back({k == 0 ? P1 : P2, tape().alias(st, true), tape().alias(st, true)});
      }
      project_memory(mem, w, b, cs, 1);
      Var out = attention(q, {{cs[0].cnst, 1, 1}, {cs[0].diff, 2, 2}}, {0, 1, 2, 0, 1, 2}, Var(), 2);
      if (caches_n == 2) out = add(out, attention(q, {{cs[1].diff, 1, 3}}, {0, 1, 2, 2, 1, 0}, Var(), 2));
      return out;
    };
    std::vector<Var> wrt{w, b, P1, q};
    if (caches_n == 2) wrt.push_back(P2);
    if (check_fd) CHECK_GRADS(f, wrt);
    tape().zero_grad();
    Var out = f();
    std::vector<float> seed(size_t(out.value().numel()), 1.f), grads;
    tape().backward(out, Tensor{seed.data(), out.shape(), Device::CPU});
    for (Var v : wrt) grads.insert(grads.end(), tape().grad(v).data, tape().grad(v).data + v.value().numel());
    return grads;
  };
  for (int caches_n : {1, 2}) {
    INFO(caches_n, " caches");
    const std::vector<float> constant = run(false, caches_n, true), general = run(true, caches_n, false);
    REQUIRE(constant.size() == general.size());
    for (size_t i = 0; i < constant.size(); ++i) CHECK(constant[i] == doctest::Approx(general[i]).epsilon(1e-5));
  }
}

TEST_CASE("global grad norm over the parameter block") {
  ParamStore ps;
  ps.add("a", {3}, ParamRole::Bias);
  ps.add("b", {1, 7}, ParamRole::Matrix);
  ps.finalize();
  double s = 0;
  for (size_t i = 0; i < ps.numel(); ++i) {
    ps.grads()[i] = float(i) - 4.5f;
    s += double(ps.grads()[i]) * ps.grads()[i];
  }
  CHECK(global_grad_norm(ps) == doctest::Approx(std::sqrt(s)));
}

TEST_CASE("grad: cross-entropy over the rows that have a target") {
  tape().reset();
  Var x = random_leaf({4, 5}, 31);
  const int32_t targets[4] = {2, kNoTarget, 0, kNoTarget};
  CHECK_GRADS([&] { return cross_entropy(x, targets); }, (std::vector<Var>{x}));
  // The mean over the two rows with a target: the loss of those rows alone.
  Var rows = tape().leaf_copy(Tensor{x.data(), Shape{4, 5}, Device::CPU});
  const float both = cross_entropy(x, targets).data()[0];
  const int32_t first[1] = {2}, third[1] = {0};
  const float a = cross_entropy(slice(rows, 0, 0, 1), first).data()[0], b = cross_entropy(slice(rows, 0, 2, 1), third).data()[0];
  CHECK(both == doctest::Approx(0.5 * (a + b)).epsilon(1e-6));
  // No row with a target: no loss and no gradient.
  tape().reset();
  Var y = random_leaf({2, 5}, 32);
  const int32_t none[2] = {kNoTarget, kNoTarget};
  Var l = cross_entropy(y, none);
  CHECK(l.data()[0] == 0.f);
  tape().backward(l);
  for (int i = 0; i < 10; ++i) CHECK(tape().grad(y).data[i] == 0.f);
  CHECK_THROWS_WITH_AS(cross_entropy(y, std::vector<int32_t>{-2, 0}.data()), doctest::Contains("outside [0, 5)"),
                       std::invalid_argument);
}
