// Forward + backward of the op library (attention and the memory projection: ops/attention.cpp).
// Every backward accumulates into tape().grad(input), which allocates it on first use.
#include "ops/ops.hpp"

#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>

#include "backend/profile.hpp"
#include "util/check.hpp"
#include "ops/dispatch.hpp"

namespace fbt {

void layernorm_input_grad(const Tape::GradSink& dx, const float* dy, const float* x, const float* w,
                          const float* mean, const float* rstd, int64_t N, int64_t C) {
  if (!dx.data) return;
  kernel(cpu::layernorm_backward_input, cuda::layernorm_backward_input)(dx.data, dy, x, w, mean, rstd, N, C,
                                                                        dx.accumulate);
}

namespace {
// dx (+)= s dy into a gradient sink (nothing when the input needs no gradient).
void add_scaled_grad(const Tape::GradSink& dx, float s, const float* dy, int64_t n) {
  if (!dx.data) return;
  if (dx.accumulate) kernel(cpu::axpy, cuda::axpy)(dx.data, s, dy, n);
  else kernel(cpu::scale_forward, cuda::scale_forward)(dx.data, dy, s, n);
}
}  // namespace

Var add(Var a, Var b) {
  const profile::Scope prof("add", profile::Phase::Forward);
  check(a.shape() == b.shape(), "add: shapes ", a.shape(), " and ", b.shape(), " differ");
  Var y = tape().output(a.shape(), {a, b});
  const int64_t n = a.value().numel();
  kernel(cpu::add_forward, cuda::add_forward)(y.data(), a.data(), b.data(), n);
  if (y.requires_grad())
    tape().record("add", y, [=] {
      Tape& t = tape();
      for (Var v : {a, b}) add_scaled_grad(t.grad_sink(v), 1.f, y.grad().data, n);
    });
  return y;
}

Var scale(Var x, float s) {
  const profile::Scope prof("scale", profile::Phase::Forward);
  Var y = tape().output(x.shape(), {x});
  const int64_t n = x.value().numel();
  kernel(cpu::scale_forward, cuda::scale_forward)(y.data(), x.data(), s, n);
  if (y.requires_grad())
    tape().record("scale", y, [=] { add_scaled_grad(tape().grad_sink(x), s, y.grad().data, n); });
  return y;
}

Var mask_rows(Var x, const std::vector<uint8_t>& keep) {
  const profile::Scope prof("mask_rows", profile::Phase::Forward);
  const int64_t N = x.value().rows(), C = x.value().cols();
  check(int64_t(keep.size()) == N, "mask_rows: ", keep.size(), " flags for ", N, " rows of ", x.shape());
  Var y = tape().output(x.shape(), {x});
  const uint8_t* flags = on_device() ? stage(keep.data(), keep.size()) : keep.data();
  kernel(cpu::mask_rows_forward, cuda::mask_rows_forward)(y.data(), x.data(), flags, N, C);
  if (y.requires_grad())
    tape().record("mask_rows", y, [=] {  // the closure holds its own copy of the host flags
      const uint8_t* f = on_device() ? flags : keep.data();
      kernel(cpu::mask_rows_backward, cuda::mask_rows_backward)(tape().grad(x).data, y.grad().data, f, N, C);
    });
  return y;
}

Var layernorm(Var x, Var w, Var b) {
  const profile::Scope prof("layernorm", profile::Phase::Forward);
  const int64_t N = x.value().rows(), C = x.value().cols();
  check(w.shape() == Shape{C} && b.shape() == Shape{C}, "layernorm: x ", x.shape(), " with weight ", w.shape(),
        " and bias ", b.shape());
  Var y = tape().output(x.shape(), {x, w, b});
  float* mean = tape().arena().alloc_floats(size_t(N));
  float* rstd = tape().arena().alloc_floats(size_t(N));
  kernel(cpu::layernorm_forward, cuda::layernorm_forward)(y.data(), mean, rstd, x.data(), w.data(), b.data(), N, C);
  if (y.requires_grad())
    tape().record("layernorm", y, [=] {
      Tape& t = tape();
      layernorm_input_grad(t.grad_sink(x), y.grad().data, x.data(), w.data(), mean, rstd, N, C);
      if (w.requires_grad() || b.requires_grad())
        kernel(cpu::layernorm_backward_params, cuda::layernorm_backward_params)(t.grad(w).data, t.grad(b).data,
                                                                                y.grad().data, x.data(), mean, rstd, N, C);
    });
  return y;
}

Var geglu(Var u) {
  const profile::Scope prof("geglu", profile::Phase::Forward);
  check(u.shape()[-1] % 2 == 0, "geglu: last dimension of ", u.shape(), " is odd");
  const int64_t N = u.value().rows(), F = u.value().cols() / 2;
  Shape ys = u.shape();
  ys[-1] = F;
  Var y = tape().output(ys, {u});
  kernel(cpu::geglu_forward, cuda::geglu_forward)(y.data(), u.data(), N, F);
  if (y.requires_grad())
    tape().record("geglu", y, [=] {
      const Tape::GradSink du = tape().grad_sink(u);
      kernel(cpu::geglu_backward, cuda::geglu_backward)(du.data, y.grad().data, u.data(), N, F, du.accumulate);
    });
  return y;
}

Var embedding(Var W, const int32_t* ids, const Shape& ids_shape) {
  const profile::Scope prof("embedding", profile::Phase::Forward);
  check(W.shape().nd == 2, "embedding: table ", W.shape(), " is not 2-D");
  const int64_t V = W.shape()[0], D = W.shape()[1], N = ids_shape.numel();
  for (int64_t i = 0; i < N; ++i)
    check(ids[i] >= 0 && ids[i] < V, "embedding: token id ", ids[i], " at position ", i, " outside [0, ", V, ")");
  check(ids_shape.nd < Shape::kMaxDims, "embedding: ids have too many dimensions");
  Shape ys = ids_shape;
  ys.d[size_t(ys.nd++)] = D;
  Var y = tape().output(ys, {W});
  const int32_t* staged = stage(ids, size_t(N));  // kept for the backward
  kernel(cpu::embedding_forward, cuda::embedding_forward)(y.data(), W.data(), staged, N, D);
  if (!y.requires_grad()) return y;
  // Each token's rows summed in row order (a device sums them in one block): the rows grouped by
  // token, staged now.
  const TokenRows g = group_by_token(ids, N);
  const int64_t U = int64_t(g.tokens.size());
  const int32_t *rows = stage(g.rows.data(), g.rows.size()), *tokens = stage(g.tokens.data(), g.tokens.size()),
                *starts = stage(g.starts.data(), g.starts.size());
  tape().record("embedding", y, [=] {
    kernel(cpu::embedding_backward, cuda::embedding_backward)(tape().grad(W).data, y.grad().data, rows, tokens, starts,
                                                              U, D);
  });
  return y;
}

Var cross_entropy(Var logits, const int32_t* targets) {
  const profile::Scope prof("cross_entropy", profile::Phase::Forward);
  const int64_t N = logits.value().rows(), V = logits.value().cols();
  int64_t counted = 0;  // rows with a target
  for (int64_t i = 0; i < N; ++i) {
    check(targets[i] >= kNoTarget && targets[i] < V, "cross_entropy: target ", targets[i], " at row ", i,
          " outside [0, ", V, ") (or ", kNoTarget, ": none)");
    counted += targets[i] != kNoTarget;
  }
  Var y = tape().output(Shape{}, {logits});
  float* lse = tape().arena().alloc_floats(size_t(N));
  const int32_t* staged = stage(targets, size_t(N));  // kept for the backward
  // On a device the loss stays there (read once the step is done) and so does its gradient.
  kernel(cpu::cross_entropy_forward, cuda::cross_entropy_forward)(y.data(), lse, logits.data(), staged, N, V, counted);
  if (y.requires_grad())
    tape().record("cross_entropy", y, [=] {
      kernel(cpu::cross_entropy_backward, cuda::cross_entropy_backward)(tape().grad(logits).data, y.grad().data, counted,
                                                                        logits.data(), lse, staged, N, V);
    });
  return y;
}

Var weighted_sum(Var w, const std::vector<Var>& xs) {
  const profile::Scope prof("weighted_sum", profile::Phase::Forward);
  const int64_t K = int64_t(xs.size());
  check(w.shape() == Shape{K}, "weighted_sum: ", K, " values but weights ", w.shape());
  for (const Var& x : xs) check(x.shape() == xs[0].shape(), "weighted_sum: shapes ", x.shape(), " and ", xs[0].shape());
  std::vector<Var> inputs(xs);
  inputs.push_back(w);
  Var y = tape().output(xs[0].shape(), inputs);
  const int64_t n = xs[0].value().numel();
  float* a = tape().arena().alloc_floats(size_t(K));
  std::vector<const float*> ptrs;
  for (const Var& x : xs) ptrs.push_back(x.data());
  // The kernels read the pointer arrays where they run.
  const float* const* xp = on_device() ? stage(ptrs.data(), ptrs.size()) : nullptr;
  kernel(cpu::weighted_sum_forward, cuda::weighted_sum_forward)(y.data(), a, w.data(), xp ? xp : ptrs.data(), K, n);
  if (y.requires_grad())
    tape().record("weighted_sum", y, [=] {
      Tape& t = tape();
      std::vector<float*> dxs;
      for (const Var& x : xs) dxs.push_back(t.grad(x).data);
      float* const* dxp = on_device() ? stage(dxs.data(), dxs.size()) : dxs.data();
      kernel(cpu::weighted_sum_backward, cuda::weighted_sum_backward)(dxp, t.grad(w).data, y.grad().data, a,
                                                                      xp ? xp : ptrs.data(), K, n);
    });
  return y;
}

namespace {
// View a tensor as (outer, len along axis, inner).
void split_axis(const Shape& s, int axis, int64_t& outer, int64_t& inner) {
  outer = inner = 1;
  for (int i = 0; i < axis; ++i) outer *= s[i];
  for (int i = axis + 1; i < s.nd; ++i) inner *= s[i];
}
}  // namespace

Var concat(const std::vector<Var>& xs, int axis) {
  const profile::Scope prof("concat", profile::Phase::Forward);
  check(!xs.empty(), "concat: no inputs");
  Shape ys = xs[0].shape();
  if (axis < 0) axis += ys.nd;
  int64_t total = 0;
  for (const Var& x : xs) {
    Shape s = x.shape();
    check(s.nd == ys.nd, "concat: ranks differ: ", s, " vs ", ys);
    for (int i = 0; i < s.nd; ++i)
      check(i == axis || s[i] == ys[i], "concat along ", axis, ": ", s, " vs ", ys);
    total += s[axis];
  }
  ys[axis] = total;
  Var y = tape().output(ys, xs);
  int64_t outer, inner;
  split_axis(ys, axis, outer, inner);
  const Device dev = tape().device();
  int64_t at = 0;
  for (const Var& x : xs) {
    const int64_t len = x.shape()[axis] * inner;
    copy_rows(y.data() + at, total * inner, dev, x.data(), len, dev, outer, len);
    at += len;
  }
  if (y.requires_grad())
    tape().record("concat", y, [=] {
      int64_t at2 = 0;
      for (const Var& x : xs) {
        const int64_t len = x.shape()[axis] * inner;
        if (x.requires_grad())
          kernel(cpu::add_rows, cuda::add_rows)(tape().grad(x).data, len, y.grad().data + at2, total * inner, outer, len);
        at2 += len;
      }
    });
  return y;
}

Var slice(Var x, int axis, int64_t begin, int64_t len) {
  const profile::Scope prof("slice", profile::Phase::Forward);
  Shape ys = x.shape();
  if (axis < 0) axis += ys.nd;
  check(begin >= 0 && len >= 0 && begin + len <= ys[axis], "slice [", begin, ", ", begin + len, ") of axis ", axis,
        " of ", ys);
  const int64_t full = ys[axis];
  ys[axis] = len;
  Var y = tape().output(ys, {x});
  int64_t outer, inner;
  split_axis(ys, axis, outer, inner);
  const Device dev = tape().device();
  copy_rows(y.data(), len * inner, dev, x.data() + begin * inner, full * inner, dev, outer, len * inner);
  if (y.requires_grad())
    tape().record("slice", y, [=] {
      kernel(cpu::add_rows, cuda::add_rows)(tape().grad(x).data + begin * inner, full * inner, y.grad().data, len * inner,
                                            outer, len * inner);
    });
  return y;
}

Var dropout(Var x, float p, Rng& rng) {
  const profile::Scope prof("dropout", profile::Phase::Forward);
  check(p >= 0.f && p < 1.f, "dropout: p = ", p, " outside [0, 1)");
  if (p == 0.f) return x;
  const int64_t n = x.value().numel();
  const float* mask = dropout_mask(p, rng, n);
  Var y = tape().output(x.shape(), {x});
  kernel(cpu::mul_forward, cuda::mul_forward)(y.data(), x.data(), mask, n);
  if (y.requires_grad())
    tape().record("dropout", y, [=] {
      kernel(cpu::mul_backward, cuda::mul_backward)(tape().grad(x).data, nullptr, y.grad().data, x.data(), mask, n);
    });
  return y;
}

const float* dropout_mask(float p, Rng& rng, int64_t n) {
  // The counter-based generator draws the same mask on every device.
  float* mask = tape().arena().alloc_floats(size_t(n));
  kernel(cpu::dropout_mask, cuda::dropout_mask)(mask, p, rng.seed, rng.take(uint64_t(n)), n);
  return mask;
}

double global_grad_norm(const ParamStore& params) {
  const profile::Scope prof("gradient norm", profile::Phase::Optimizer);
  const auto sum_squares = params.device() == Device::CPU ? cpu::sum_squares : cuda::sum_squares;
  return std::sqrt(sum_squares(params.grad_block(), int64_t(params.numel())));
}

void scale_grads(ParamStore& params, float s) {
  const auto scale = params.device() == Device::CPU ? cpu::scale_forward : cuda::scale_forward;
  scale(params.grad_block(), params.grad_block(), s, int64_t(params.numel()));
}

void add_grads_to(float* acc, const ParamStore& params) {
  const auto add = params.device() == Device::CPU ? cpu::add_forward : cuda::add_forward;
  add(acc, acc, params.grad_block(), int64_t(params.numel()));
}

}  // namespace fbt
