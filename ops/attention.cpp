// Attention over key/value segments, and the projection of memory vectors into the key/value
// cache that attention reads. Kernels: ops/cpu/attention.cpp, ops/cpu/kernels.cpp.
#include <cstring>

#include "ops/check.hpp"
#include "ops/cpu/kernels.hpp"
#include "ops/ops.hpp"

namespace fbt {

Var attention(Var q, const std::vector<KVSegment>& segs, const std::vector<int32_t>& bucket, Var bias, int64_t H,
              float dropout_p, Rng* rng) {
  check(q.shape().nd == 3 && q.shape()[2] % H == 0, "attention: q ", q.shape(), " is not (B, n, H*Dh) with H = ", H);
  const int64_t B = q.shape()[0], n = q.shape()[1], I = q.shape()[2], Dh = I / H;
  int64_t S = 0;
  std::vector<Var> inputs{q};
  std::vector<cpu::KVRows> rows;
  for (const KVSegment& s : segs) {
    const Shape& ss = s.src.shape();
    check(ss.nd == 3 && ss[0] == B && ss[2] == 2 * I && s.row_begin >= 0 && s.row_begin + s.rows <= ss[1],
          "attention: key/value rows [", s.row_begin, ", ", s.row_begin + s.rows, ") of ", ss, " for q ", q.shape());
    rows.push_back({s.src.data() + s.row_begin * 2 * I, nullptr, ss[1] * 2 * I, s.rows});
    inputs.push_back(s.src);
    S += s.rows;
  }
  check(int64_t(bucket.size()) == n * S, "attention: bucket table of ", bucket.size(), " for ", n, " x ", S);
  if (bias) {
    check(bias.shape().nd == 2 && bias.shape()[1] == H, "attention: bias ", bias.shape(), " is not (buckets, ", H, ")");
    for (int32_t b : bucket) check(b < bias.shape()[0], "attention: bucket ", b, " outside bias ", bias.shape());
    inputs.push_back(bias);
  }
  Var out = tape().output({B, n, I}, inputs);
  const cpu::AttentionDims d{B, n, H, Dh, S};
  Arena& arena = tape().arena();
  float* probs = arena.alloc_floats(size_t(B * H * n * S));
  float* drop = nullptr;
  if (dropout_p > 0.f) {
    check(rng != nullptr, "attention: dropout needs a generator");
    drop = arena.alloc_floats(size_t(B * H * n * S));
    cpu::dropout_mask(drop, dropout_p, rng->seed, rng->take(uint64_t(B * H * n * S)), B * H * n * S);
  }
  cpu::attention_forward(out.data(), probs, q.data(), rows.data(), int(rows.size()), bucket.data(),
                         bias ? bias.data() : nullptr, drop, d);
  if (out.requires_grad())
    tape().record(out, [=]() mutable {
      Tape& t = tape();
      for (size_t k = 0; k < segs.size(); ++k) {
        Tensor g = t.grad(segs[k].src);
        rows[k].grad = g.data ? g.data + segs[k].row_begin * 2 * I : nullptr;
      }
      float* dlogits = t.arena().alloc_floats(size_t(B * H * n * S));
      cpu::attention_backward(t.grad(q).data, bias ? t.grad(bias).data : nullptr, dlogits, out.grad().data, q.data(),
                              rows.data(), int(rows.size()), bucket.data(), probs, drop, d);
    });
  return out;
}

void project_memory(Var mem, Var norm_w, Var norm_b, Var P, Var cache_diff, Var cache_const, int64_t row) {
  const Shape& cs = cache_diff.shape();
  check(mem.shape().nd == 3 && P.shape().nd == 2 && P.shape()[1] == mem.shape()[2] && cs.nd == 3 &&
            cs[0] == mem.shape()[0] && cs[2] == P.shape()[0] && row >= 0 && row + mem.shape()[1] <= cs[1],
        "project_memory: memory ", mem.shape(), " with projection ", P.shape(), " into rows from ", row, " of ", cs);
  check(cache_const.data() == cache_diff.data(), "project_memory: the two caches must share storage");
  const int64_t B = mem.shape()[0], n = mem.shape()[1], D = mem.shape()[2], KV = P.shape()[0], R = cs[1];
  Arena& arena = tape().arena();
  Tensor normed = arena.alloc({B * n, D});
  float* mean = arena.alloc_floats(size_t(B * n));
  float* rstd = arena.alloc_floats(size_t(B * n));
  cpu::layernorm_forward(normed.data, mean, rstd, mem.data(), norm_w.data(), norm_b.data(), B * n, D);
  Tensor kv = arena.alloc({B * n, KV});
  cpu::linear_forward(kv.data, normed.data, P.data(), nullptr, B * n, D, KV);
  for (int64_t b = 0; b < B; ++b)
    std::memcpy(cache_diff.data() + (b * R + row) * KV, kv.data + b * n * KV, sizeof(float) * size_t(n * KV));

  const bool params_need = norm_w.requires_grad() || norm_b.requires_grad() || P.requires_grad();
  if (!tape().recording() || !(params_need || mem.requires_grad())) return;
  tape().record(Var(), [=] {
    Tape& t = tape();
    // Gather this projection's rows of both cache gradients: g_diff (B*n, KV), g_all = g_diff + g_const.
    Tensor gd = t.grad(cache_diff), gc = t.grad(cache_const);
    Arena& a = t.arena();
    float* g_diff = a.alloc_floats(size_t(B * n * KV));
    float* g_all = a.alloc_floats(size_t(B * n * KV));
    bool any_const = false;  // policy none: rows written in the call are never read as constants
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i = 0; i < n * KV; ++i) {
        const int64_t src = (b * R + row) * KV + i, dst = b * n * KV + i;
        const float c = gc.data ? gc.data[src] : 0.f;
        g_diff[dst] = gd.data ? gd.data[src] : 0.f;
        g_all[dst] = g_diff[dst] + c;
        any_const = any_const || c != 0.f;
      }
    float* dn_all = a.alloc_floats(size_t(B * n * D));
    std::memset(dn_all, 0, sizeof(float) * size_t(B * n * D));
    if (P.requires_grad()) t.defer_weight_grad(t.grad(P).data, g_all, normed.data, B * n, D, KV);
    cpu::linear_backward_input(dn_all, g_all, P.data(), B * n, D, KV);
    cpu::layernorm_backward_params(t.grad(norm_w).data, t.grad(norm_b).data, dn_all, mem.data(), mean, rstd, B * n, D);
    if (mem.requires_grad()) {
      float* dn_diff = dn_all;  // the same product unless some reader held these rows constant
      if (any_const) {
        dn_diff = a.alloc_floats(size_t(B * n * D));
        std::memset(dn_diff, 0, sizeof(float) * size_t(B * n * D));
        cpu::linear_backward_input(dn_diff, g_diff, P.data(), B * n, D, KV);
      }
      cpu::layernorm_backward_input(t.grad(mem).data, dn_diff, mem.data(), norm_w.data(), mean, rstd, B * n, D);
    }
  });
}

}  // namespace fbt
