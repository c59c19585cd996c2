// Forward + backward of the op library (attention and the memory projection: ops/attention.cpp).
// Every backward accumulates into tape().grad(input), which allocates it on first use.
#include "ops/ops.hpp"

#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>

#include "ops/check.hpp"
#include "ops/cpu/kernels.hpp"

namespace fbt {

void linear_values(float* y, const float* x, Var W, const float* b, int64_t N) {
  const int64_t Out = W.shape()[0], In = W.shape()[1];
  cpu::linear_forward_packed(y, x, W.data(), W.node()->packed_fwd, b, N, In, Out);
}

int64_t linear_packed_max_rows() { return cpu::kPackedRows; }

Var linear(Var x, Var W, Var b) {
  const int64_t Out = W.shape()[0], In = W.shape()[1], N = x.value().rows();
  check(W.shape().nd == 2 && x.shape()[-1] == In, "linear: x ", x.shape(), " does not match W ", W.shape());
  check(!b || (b.shape().nd == 1 && b.shape()[0] == Out), "linear: bias ", b ? b.shape() : Shape{}, " vs W ", W.shape());
  Shape ys = x.shape();
  ys[-1] = Out;
  Var y = tape().output(ys, {x, W, b});
  linear_values(y.data(), x.data(), W, b ? b.data() : nullptr, N);
  if (y.requires_grad())
    tape().record(y, [=] {
      Tape& t = tape();
      if (x.requires_grad()) cpu::linear_backward_input_packed(t.grad(x).data, y.grad().data, W.data(), W.node()->packed_bwd, N, In, Out);
      float* db = b && b.requires_grad() ? t.grad(b).data : nullptr;
      if (W.requires_grad()) t.defer_weight_grad(t.grad(W).data, db, y.grad().data, x.data(), N, In, Out);
      else if (db) cpu::bias_backward(db, y.grad().data, N, Out);
    });
  return y;
}

Var bmm(Var a, Var b) {
  check(a.shape().nd == 3 && b.shape().nd == 3 && a.shape()[0] == b.shape()[0] && a.shape()[2] == b.shape()[1],
        "bmm: shapes ", a.shape(), " and ", b.shape(), " do not chain");
  const int64_t G = a.shape()[0], M = a.shape()[1], K = a.shape()[2], N = b.shape()[2];
  Var y = tape().output({G, M, N}, {a, b});
  cpu::bmm_forward(y.data(), a.data(), b.data(), G, M, K, N);
  if (y.requires_grad())
    tape().record(y, [=] {
      Tape& t = tape();
      cpu::bmm_backward(t.grad(a).data, t.grad(b).data, y.grad().data, a.data(), b.data(), G, M, K, N);
    });
  return y;
}

Var add(Var a, Var b) {
  check(a.shape() == b.shape(), "add: shapes ", a.shape(), " and ", b.shape(), " differ");
  Var y = tape().output(a.shape(), {a, b});
  const int64_t n = a.value().numel();
  cpu::add_forward(y.data(), a.data(), b.data(), n);
  if (y.requires_grad())
    tape().record(y, [=] {
      Tape& t = tape();
      if (a.requires_grad()) cpu::axpy(t.grad(a).data, 1.f, y.grad().data, n);
      if (b.requires_grad()) cpu::axpy(t.grad(b).data, 1.f, y.grad().data, n);
    });
  return y;
}

Var mul(Var a, Var b) {
  check(a.shape() == b.shape(), "mul: shapes ", a.shape(), " and ", b.shape(), " differ");
  Var y = tape().output(a.shape(), {a, b});
  const int64_t n = a.value().numel();
  cpu::mul_forward(y.data(), a.data(), b.data(), n);
  if (y.requires_grad())
    tape().record(y, [=] {
      Tape& t = tape();
      cpu::mul_backward(t.grad(a).data, t.grad(b).data, y.grad().data, a.data(), b.data(), n);
    });
  return y;
}

Var scale(Var x, float s) {
  Var y = tape().output(x.shape(), {x});
  const int64_t n = x.value().numel();
  cpu::scale_forward(y.data(), x.data(), s, n);
  if (y.requires_grad()) tape().record(y, [=] { cpu::axpy(tape().grad(x).data, s, y.grad().data, n); });
  return y;
}

Var mask_rows(Var x, const std::vector<uint8_t>& keep) {
  const int64_t N = x.value().rows(), C = x.value().cols();
  check(int64_t(keep.size()) == N, "mask_rows: ", keep.size(), " flags for ", N, " rows of ", x.shape());
  Var y = tape().output(x.shape(), {x});
  for (int64_t r = 0; r < N; ++r)
    for (int64_t c = 0; c < C; ++c) y.data()[r * C + c] = keep[size_t(r)] ? x.data()[r * C + c] : 0.f;
  if (y.requires_grad())
    tape().record(y, [=] {
      float* dx = tape().grad(x).data;
      for (int64_t r = 0; r < N; ++r)
        if (keep[size_t(r)]) cpu::axpy(dx + r * C, 1.f, y.grad().data + r * C, C);
    });
  return y;
}

Var layernorm(Var x, Var w, Var b) {
  const int64_t N = x.value().rows(), C = x.value().cols();
  check(w.shape() == Shape{C} && b.shape() == Shape{C}, "layernorm: x ", x.shape(), " with weight ", w.shape(),
        " and bias ", b.shape());
  Var y = tape().output(x.shape(), {x, w, b});
  float* mean = tape().arena().alloc_floats(size_t(N));
  float* rstd = tape().arena().alloc_floats(size_t(N));
  cpu::layernorm_forward(y.data(), mean, rstd, x.data(), w.data(), b.data(), N, C);
  if (y.requires_grad())
    tape().record(y, [=] {
      Tape& t = tape();
      if (x.requires_grad())
        cpu::layernorm_backward_input(t.grad(x).data, y.grad().data, x.data(), w.data(), mean, rstd, N, C);
      if (w.requires_grad() || b.requires_grad())
        cpu::layernorm_backward_params(t.grad(w).data, t.grad(b).data, y.grad().data, x.data(), mean, rstd, N, C);
    });
  return y;
}

Var gelu(Var x) {
  Var y = tape().output(x.shape(), {x});
  const int64_t n = x.value().numel();
  cpu::gelu_forward(y.data(), x.data(), n);
  if (y.requires_grad()) tape().record(y, [=] { cpu::gelu_backward(tape().grad(x).data, y.grad().data, x.data(), n); });
  return y;
}

Var geglu(Var u) {
  check(u.shape()[-1] % 2 == 0, "geglu: last dimension of ", u.shape(), " is odd");
  const int64_t N = u.value().rows(), F = u.value().cols() / 2;
  Shape ys = u.shape();
  ys[-1] = F;
  Var y = tape().output(ys, {u});
  cpu::geglu_forward(y.data(), u.data(), N, F);
  if (y.requires_grad())
    tape().record(y, [=] { cpu::geglu_backward(tape().grad(u).data, y.grad().data, u.data(), N, F); });
  return y;
}

Var masked_softmax(Var x, const std::vector<uint8_t>& mask) {
  const int64_t N = x.value().rows(), C = x.value().cols();
  check(int64_t(mask.size()) == N * C, "masked_softmax: mask of ", mask.size(), " for ", x.shape());
  Var y = tape().output(x.shape(), {x});
  cpu::masked_softmax_forward(y.data(), x.data(), mask.data(), N, C);
  if (y.requires_grad())
    tape().record(y, [=] { cpu::masked_softmax_backward(tape().grad(x).data, y.grad().data, y.data(), N, C); });
  return y;
}

Var embedding(Var W, const int32_t* ids, const Shape& ids_shape) {
  check(W.shape().nd == 2, "embedding: table ", W.shape(), " is not 2-D");
  const int64_t V = W.shape()[0], D = W.shape()[1], N = ids_shape.numel();
  for (int64_t i = 0; i < N; ++i)
    check(ids[i] >= 0 && ids[i] < V, "embedding: token id ", ids[i], " at position ", i, " outside [0, ", V, ")");
  check(ids_shape.nd < Shape::kMaxDims, "embedding: ids have too many dimensions");
  Shape ys = ids_shape;
  ys.d[size_t(ys.nd++)] = D;
  Var y = tape().output(ys, {W});
  cpu::embedding_forward(y.data(), W.data(), ids, N, D);
  if (y.requires_grad()) {
    int32_t* saved = reinterpret_cast<int32_t*>(tape().arena().alloc_floats(size_t(N)));
    std::memcpy(saved, ids, sizeof(int32_t) * size_t(N));
    tape().record(y, [=] { cpu::embedding_backward(tape().grad(W).data, y.grad().data, saved, N, D); });
  }
  return y;
}

Var cross_entropy(Var logits, const int32_t* targets) {
  const int64_t N = logits.value().rows(), V = logits.value().cols();
  for (int64_t i = 0; i < N; ++i)
    check(targets[i] >= 0 && targets[i] < V, "cross_entropy: target ", targets[i], " at row ", i,
          " outside [0, ", V, ")");
  Var y = tape().output(Shape{}, {logits});
  float* lse = tape().arena().alloc_floats(size_t(N));
  y.data()[0] = float(cpu::cross_entropy_forward(lse, logits.data(), targets, N, V) / double(N));
  if (y.requires_grad()) {
    int32_t* saved = reinterpret_cast<int32_t*>(tape().arena().alloc_floats(size_t(N)));
    std::memcpy(saved, targets, sizeof(int32_t) * size_t(N));
    tape().record(y, [=] {
      cpu::cross_entropy_backward(tape().grad(logits).data, y.grad().data[0] / float(N), logits.data(), lse, saved,
                                  N, V);
    });
  }
  return y;
}

Var weighted_sum(Var w, const std::vector<Var>& xs) {
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
  cpu::weighted_sum_forward(y.data(), a, w.data(), ptrs.data(), K, n);
  if (y.requires_grad())
    tape().record(y, [=] {
      Tape& t = tape();
      std::vector<float*> dxs;
      for (const Var& x : xs) dxs.push_back(t.grad(x).data);
      cpu::weighted_sum_backward(dxs.data(), t.grad(w).data, y.grad().data, a, ptrs.data(), K, n);
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
  int64_t at = 0;
  for (const Var& x : xs) {
    const int64_t len = x.shape()[axis] * inner;
    for (int64_t o = 0; o < outer; ++o)
      std::memcpy(y.data() + o * total * inner + at, x.data() + o * len, sizeof(float) * size_t(len));
    at += len;
  }
  if (y.requires_grad())
    tape().record(y, [=] {
      int64_t at2 = 0;
      for (const Var& x : xs) {
        const int64_t len = x.shape()[axis] * inner;
        if (x.requires_grad()) {
          float* dx = tape().grad(x).data;
          for (int64_t o = 0; o < outer; ++o) cpu::axpy(dx + o * len, 1.f, y.grad().data + o * total * inner + at2, len);
        }
        at2 += len;
      }
    });
  return y;
}

Var slice(Var x, int axis, int64_t begin, int64_t len) {
  Shape ys = x.shape();
  if (axis < 0) axis += ys.nd;
  check(begin >= 0 && len >= 0 && begin + len <= ys[axis], "slice [", begin, ", ", begin + len, ") of axis ", axis,
        " of ", ys);
  const int64_t full = ys[axis];
  ys[axis] = len;
  Var y = tape().output(ys, {x});
  int64_t outer, inner;
  split_axis(ys, axis, outer, inner);
  for (int64_t o = 0; o < outer; ++o)
    std::memcpy(y.data() + o * len * inner, x.data() + (o * full + begin) * inner, sizeof(float) * size_t(len * inner));
  if (y.requires_grad())
    tape().record(y, [=] {
      float* dx = tape().grad(x).data;
      for (int64_t o = 0; o < outer; ++o)
        cpu::axpy(dx + (o * full + begin) * inner, 1.f, y.grad().data + o * len * inner, len * inner);
    });
  return y;
}

Var dropout(Var x, float p, Rng& rng) {
  check(p >= 0.f && p < 1.f, "dropout: p = ", p, " outside [0, 1)");
  if (p == 0.f) return x;
  const int64_t n = x.value().numel();
  float* mask = tape().arena().alloc_floats(size_t(n));
  cpu::dropout_mask(mask, p, rng.seed, rng.take(uint64_t(n)), n);
  Var y = tape().output(x.shape(), {x});
  cpu::mul_forward(y.data(), x.data(), mask, n);
  if (y.requires_grad())
    tape().record(y, [=] { cpu::mul_backward(tape().grad(x).data, nullptr, y.grad().data, x.data(), mask, n); });
  return y;
}

double global_grad_norm(const ParamStore& params) {
  return std::sqrt(cpu::sum_squares(params.grads().data(), int64_t(params.grads().size())));
}

}  // namespace fbt
