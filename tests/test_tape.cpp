// Tape semantics: accumulation, detach, no-grad, repeated backward, arena and parameter blocks.
#include <doctest/doctest.h>

#include <chrono>

#include "autograd/params.hpp"
#include "backend/profile.hpp"
#include "gradcheck.hpp"
#include "ops/ops.hpp"
#include "test_only_ops.hpp"

using namespace fbt;
using fbt::testing::gelu;
using fbt::testing::mul;
using fbt::testing::random_leaf;

TEST_CASE("tape: a value used twice accumulates its gradient") {
  tape().reset();
  Var x = random_leaf({3, 7}, 1);
  Var y = add(x, x);  // dy/dx = 2
  Var s = mul(y, x);  // s = 2x^2 -> ds/dx = 4x
  float ones[21];
  for (float& v : ones) v = 1.f;
  tape().backward(s, Tensor{ones, s.shape(), Device::CPU});
  for (int i = 0; i < 21; ++i) CHECK(tape().grad(x).data[i] == doctest::Approx(4 * x.data()[i]).epsilon(1e-6));
}

TEST_CASE("tape: detach stops the gradient") {
  tape().reset();
  Var x = random_leaf({3, 7}, 2);
  Var y = mul(detach(x), x);  // only the second factor carries gradient: d/dx = x
  float ones[21];
  for (float& v : ones) v = 1.f;
  tape().backward(y, Tensor{ones, y.shape(), Device::CPU});
  for (int i = 0; i < 21; ++i) CHECK(tape().grad(x).data[i] == doctest::Approx(x.data()[i]).epsilon(1e-6));
}

TEST_CASE("tape: a no-grad scope records nothing") {
  tape().reset();
  Var x = random_leaf({3, 7}, 3);
  size_t before = tape().num_records();
  {
    NoGradScope ng;
    Var y = gelu(layernorm(x, random_leaf({7}, 4), random_leaf({7}, 5)));
    CHECK_FALSE(y.requires_grad());
  }
  CHECK(tape().num_records() == before);
  Var z = gelu(x);
  CHECK(z.requires_grad());
  CHECK(tape().num_records() == before + 1);
}

TEST_CASE("tape: a second backward after zeroing gives the same gradients") {
  tape().reset();
  ParamStore ps;
  Var W = ps.add("w", {5, 7}, ParamRole::Matrix);
  Var b = ps.add("b", {5}, ParamRole::Bias);
  ps.finalize();
  fbt::testing::fill_normal(ps.values().data(), int64_t(ps.numel()), 6);
  Var x = random_leaf({3, 7}, 7);
  int32_t tg[3] = {0, 4, 2};
  Var loss = cross_entropy(linear(x, W, b), tg);
  tape().backward(loss);
  std::vector<float> first = ps.grads();
  std::vector<float> gx(tape().grad(x).data, tape().grad(x).data + 21);
  ps.zero_grad();
  tape().zero_grad();
  tape().backward(loss);
  CHECK(ps.grads() == first);
  CHECK(std::vector<float>(tape().grad(x).data, tape().grad(x).data + 21) == gx);
  // Parameter gradients accumulate across backward calls when not zeroed.
  tape().zero_grad();
  tape().backward(loss);
  for (size_t i = 0; i < first.size(); ++i) CHECK(ps.grads()[i] == doctest::Approx(2 * first[i]));
}

TEST_CASE("params: values and gradients are contiguous blocks in registration order") {
  ParamStore ps;
  Var a = ps.add("a", {2, 3}, ParamRole::Matrix);
  Var b = ps.add("b", {4}, ParamRole::Bias);
  ps.finalize();
  CHECK(ps.numel() == 10);
  CHECK(a.data() == ps.values().data());
  CHECK(b.data() == ps.values().data() + 6);
  CHECK(b.grad().data == ps.grads().data() + 6);
  CHECK(ps.get("b") == b);
  CHECK_THROWS_AS(ps.get("c"), std::out_of_range);
}

TEST_CASE("arena: aligned allocations survive growth; after reset the same steps reuse the same memory") {
  Arena arena(Device::CPU, 256);
  auto one_step = [&] {
    std::vector<float*> ptrs;
    for (int i = 0; i < 100; ++i) {
      float* p = arena.alloc_floats(size_t(37 + i));
      CHECK(reinterpret_cast<uintptr_t>(p) % 64 == 0);
      for (int k = 0; k < 37 + i; ++k) p[k] = float(i);
      ptrs.push_back(p);
    }
    for (int i = 0; i < 100; ++i) CHECK(ptrs[size_t(i)][36] == float(i));
    return ptrs;
  };
  const std::vector<float*> first = one_step();
  const size_t cap = arena.capacity_bytes();
  arena.reset();
  CHECK(arena.used_bytes() == 0);
  CHECK(one_step() == first);  // no new block: a steady loop allocates nothing
  CHECK(arena.capacity_bytes() == cap);
  arena.reset();
  float* big = arena.alloc_floats(cap);  // larger than any block: a new one at the end
  big[cap - 1] = 1.f;
  CHECK(arena.capacity_bytes() > cap);
}

TEST_CASE("rng: counter-based draws are reproducible and roughly uniform") {
  Rng a(42), b(42), c(43);
  double mean = 0;
  for (int i = 0; i < 10000; ++i) {
    float u = a.uniform();
    CHECK(u == b.uniform());
    mean += u;
    CHECK(u >= 0.f);
    CHECK(u < 1.f);
  }
  CHECK(mean / 10000 == doctest::Approx(0.5).epsilon(0.03));
  CHECK(Rng(42).uniform() != c.uniform());
}

TEST_CASE("ops: shape errors name both shapes") {
  tape().reset();
  Var x = random_leaf({3, 7}, 1), W = random_leaf({5, 6}, 2);
  try {
    linear(x, W);
    FAIL("no error");
  } catch (const std::invalid_argument& e) {
    std::string m = e.what();
    CHECK(m.find("[3, 7]") != std::string::npos);
    CHECK(m.find("[5, 6]") != std::string::npos);
  }
}

TEST_CASE("tape: the profile times each op's forward and backward, nested scopes excluded") {
  tape().reset();
  Var x = random_leaf({4, 6}, 11), W = random_leaf({5, 6}, 12);
  W.node()->requires_grad = true;
  profile::start();
  const auto t0 = std::chrono::steady_clock::now();
  {
    const profile::Scope outer("step", profile::Phase::Optimizer);
    Var y = gelu(linear(x, W, Var()));
    float ones[20];
    for (float& v : ones) v = 1.f;
    tape().backward(y, Tensor{ones, y.shape(), Device::CPU});
  }
  const double span = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const std::vector<profile::Row> rows = profile::stop();
  auto find = [&](const std::string& op, profile::Phase ph) -> const profile::Row* {
    for (const profile::Row& r : rows)
      if (r.op == op && r.phase == ph) return &r;
    return nullptr;
  };
  using profile::Phase;
  for (const char* op : {"linear", "gelu"})
    for (Phase ph : {Phase::Forward, Phase::Backward}) {
      INFO(op, " ", profile::phase_name(ph));
      const profile::Row* r = find(op, ph);
      REQUIRE(r != nullptr);
      CHECK(r->calls == 1);
      CHECK(r->seconds >= 0);
    }
  REQUIRE(find("weight gradients", Phase::Backward) != nullptr);
  // The outer scope's own time excludes the ops inside it: all rows add up to its span, which
  // lies inside the span timed here (counting the inner ops twice would double the sum).
  REQUIRE(find("step", Phase::Optimizer) != nullptr);
  double total = 0;
  for (const profile::Row& r : rows) total += r.seconds;
  CHECK(total > 0);
  CHECK(total <= span);
  // Closed: nothing more is collected.
  { const profile::Scope s("late", Phase::Forward); }
  CHECK(profile::stop().empty());
}

TEST_CASE("tape: a gradient sink is handed out unzeroed once, then accumulates") {
  tape().reset();
  Var x = random_leaf({4, 6}, 21);
  const Tape::GradSink first = tape().grad_sink(x);
  CHECK_FALSE(first.accumulate);
  const Tape::GradSink second = tape().grad_sink(x);
  CHECK(second.accumulate);
  CHECK(second.data == first.data);
  CHECK(tape().grad_sink(random_leaf({2}, 1, 1.f, /*requires_grad=*/false)).data == nullptr);

  // x read by two linears and a layernorm (each backward may be the one that overwrites): its
  // gradient is the sum of what each reader alone gives.
  auto grad_of_x = [](int readers) {
    tape().reset();
    Var xx = random_leaf({4, 6}, 21), W1 = random_leaf({5, 6}, 22), W2 = random_leaf({6, 6}, 23);
    Var lw = random_leaf({6}, 24), lb = random_leaf({6}, 25), dy = random_leaf({4, 6}, 26);
    Var out;
    auto plus = [&](Var v) { out = out ? add(out, v) : v; };
    if (readers & 1) plus(linear(linear(xx, W1, Var()), random_leaf({6, 5}, 27), Var()));
    if (readers & 2) plus(linear(xx, W2, Var()));
    if (readers & 4) plus(layernorm(xx, lw, lb));
    tape().backward(out, dy.value());
    const float* g = tape().grad(xx).data;
    return std::vector<float>(g, g + 24);
  };
  const std::vector<float> all = grad_of_x(7), a = grad_of_x(1), b = grad_of_x(2), c = grad_of_x(4);
  for (size_t i = 0; i < all.size(); ++i) CHECK(all[i] == doctest::Approx(a[i] + b[i] + c[i]).epsilon(1e-5));
}
