// Attention over key/value segments, and the projection of memory vectors into the key/value
// cache that attention reads. Kernels: backend/cpu/attention.cpp, backend/cpu/kernels.cpp.
#include <cstring>

#include "backend/profile.hpp"
#include "util/check.hpp"
#include "ops/dispatch.hpp"
#include "ops/ops.hpp"

namespace fbt {

struct KVGradGroup {
  std::vector<KVSegment> segs;  // the grouped rows, as every member reads them
  int64_t I = 0;
  AttentionDims d{};
  std::vector<AttentionGradPart> parts;  // one per member whose backward has run

  void add(const std::vector<KVSegment>& grouped, int64_t inner, const AttentionDims& dims,
           const AttentionGradPart& part) {
    if (parts.empty()) {
      segs = grouped, I = inner, d = dims;
    } else {
      bool same = grouped.size() == segs.size() && inner == I && dims.B == d.B && dims.n == d.n && dims.H == d.H &&
                  dims.Dh == d.Dh && dims.S == d.S;
      for (size_t k = 0; same && k < segs.size(); ++k)
        same = grouped[k].src == segs[k].src && grouped[k].row_begin == segs[k].row_begin &&
               grouped[k].rows == segs[k].rows;
      check(same, "attention: the calls of one key/value gradient group read different grouped rows or shapes");
    }
    parts.push_back(part);
  }
};

// A batch of up to kBatch calls: the first fixes `cutoff`, kBatch rows below the end of its keys;
// every call of the batch adds its share to the rows from there up at once (those are complete
// when the batch opens) and queues the rest, added when the batch ends: at kBatch calls, when a
// row below the cutoff is read, or at the sweep's end.
struct KVGradQueue {
  static constexpr int64_t kBatch = 16;
  int64_t B = 0, H = 0, Dh = 0;
  std::vector<DeferredKVPart> parts;  // the calls' rows below the cutoff, in the order the sweep made them
  int64_t cutoff = 0;                 // of the open batch (parts not empty)
  uint64_t flush_sweep = 0;           // the sweep whose end adds what waits

  // The cutoff for a call whose keys end before row `top`.
  int64_t open(int64_t top) {
    if (parts.empty()) cutoff = top - kBatch;
    return cutoff;
  }
  void push(const std::shared_ptr<KVGradQueue>& self, const DeferredKVPart& part, int64_t b, int64_t h, int64_t dh) {
    check(parts.empty() || (b == B && h == H && dh == Dh), "attention: one key/value queue for calls of different shapes");
    B = b, H = h, Dh = dh;
    parts.push_back(part);
    if (flush_sweep != tape().sweep_serial()) {  // the parts point into storage that lives as long as the sweep
      flush_sweep = tape().sweep_serial();
      tape().at_sweep_end([self] { self->flush(); });
    }
    if (int64_t(parts.size()) >= kBatch) flush();
  }
  // Rows from `row` up are about to be read.
  void flush_from(int64_t row) {
    if (!parts.empty() && row < cutoff) flush();
  }
  void flush() {
    if (parts.empty()) return;
    const profile::Scope prof("attention: queued key/value gradients", profile::Phase::Backward);
    int64_t lo = cutoff;
    for (const DeferredKVPart& p : parts)
      for (int k = 0; k < p.nsegs; ++k) lo = std::min(lo, p.segs[k].row_begin);
    cpu::add_deferred_kv_grads(parts.data(), int(parts.size()), B, H, Dh, lo, cutoff);
    parts.clear();
  }
};

namespace {
thread_local bool kv_grad_deferral = true;  // NoKVGradDeferral turns it off
}  // namespace

std::shared_ptr<KVGradQueue> kv_grad_queue() {
  if (!kv_grad_deferral || !tape().recording() || on_device()) return nullptr;
  return std::make_shared<KVGradQueue>();
}

NoKVGradDeferral::NoKVGradDeferral() : was(kv_grad_deferral) { kv_grad_deferral = false; }
NoKVGradDeferral::~NoKVGradDeferral() { kv_grad_deferral = was; }

namespace {
// A segment's rows as the kernels take them: src:(B,R,2I) from row_begin; with their gradient
// rows (allocated on first use) when asked.
KVRows kv_rows(const KVSegment& s, int64_t I, bool with_grad) {
  float* g = with_grad ? tape().grad(s.src).data : nullptr;
  return {s.src.data() + s.row_begin * 2 * I, g ? g + s.row_begin * 2 * I : nullptr, s.src.shape()[1] * 2 * I, s.rows};
}
// The segments' rows as the kernels take them, checked against q (B, n, H*Dh); their sources
// are appended to the op's inputs.
std::vector<KVRows> segment_rows(const std::vector<KVSegment>& segs, Var q, int64_t H, std::vector<Var>& inputs) {
  const int64_t B = q.shape()[0], I = q.shape()[2], Dh = I / H;
  std::vector<KVRows> rows;
  for (const KVSegment& s : segs) {
    const Shape& ss = s.src.shape();
    check(ss.nd == 3 && ss[0] == B && ss[2] == 2 * I && s.row_begin >= 0 && s.row_begin + s.rows <= ss[1],
          "attention: key/value rows [", s.row_begin, ", ", s.row_begin + s.rows, ") of ", ss, " for q ", q.shape());
    rows.push_back(kv_rows(s, I, false));
    if (s.heads.data && !on_device()) {  // the device kernels read the rows
      const Shape& hs = s.heads.shape;
      check(hs.nd == 4 && hs[0] == B * H && hs[1] == 2 && hs[2] == ss[1] && hs[3] == Dh,
            "attention: head mirror ", hs, " for key/value rows ", ss, " with ", H, " heads");
      rows.back().heads = s.heads.data + s.row_begin * Dh;
      rows.back().heads_rows = ss[1];
    }
    inputs.push_back(s.src);
  }
  return rows;
}

// Grouped segments (the first keys) take their key/value gradient from the group's sum: how many.
size_t count_grouped(const std::vector<KVSegment>& segs) {
  size_t grouped = 0;
  while (grouped < segs.size() && segs[grouped].grouped) ++grouped;
  for (size_t k = grouped; k < segs.size(); ++k)
    check(!segs[k].grouped, "attention: grouped key/value segments must come first");
  return grouped;
}
}  // namespace

std::shared_ptr<KVGradGroup> kv_grad_group() {
  if (!tape().recording() || on_device()) return nullptr;
  auto group = std::make_shared<KVGradGroup>();
  tape().record("attention", Var(), [group] {  // after the backward of every member (recorded later)
    if (group->parts.empty()) return;
    std::vector<KVRows> rows;
    for (const KVSegment& s : group->segs) rows.push_back(kv_rows(s, group->I, true));
    cpu::attention_kv_grad_sum(rows.data(), int(rows.size()), group->parts.data(), int(group->parts.size()),
                               group->d);
    group->parts.clear();  // the same records may be swept again
  });
  return group;
}

Var attention(Var q, const std::vector<KVSegment>& segs, const std::vector<int32_t>& bucket, Var bias, int64_t H,
              float dropout_p, Rng* rng, const std::shared_ptr<KVGradGroup>& group, const SpanMask* span) {
  const profile::Scope prof("attention", profile::Phase::Forward);
  check(q.shape().nd == 3 && q.shape()[2] % H == 0, "attention: q ", q.shape(), " is not (B, n, H*Dh) with H = ", H);
  const int64_t B = q.shape()[0], n = q.shape()[1], I = q.shape()[2], Dh = I / H;
  std::vector<Var> inputs{q};
  std::vector<KVRows> rows = segment_rows(segs, q, H, inputs);
  int64_t S = 0;
  for (const KVSegment& seg : segs) S += seg.rows;
  check(int64_t(bucket.size()) == n * S, "attention: bucket table of ", bucket.size(), " for ", n, " x ", S);
  const size_t grouped = group && !on_device() ? count_grouped(segs) : 0;
  if (bias) {
    check(bias.shape().nd == 2 && bias.shape()[1] == H, "attention: bias ", bias.shape(), " is not (buckets, ", H, ")");
    for (int32_t b : bucket) check(b < bias.shape()[0], "attention: bucket ", b, " outside bias ", bias.shape());
    inputs.push_back(bias);
  }
  Arena& arena = tape().arena();
  AttentionSpan masked;  // off unless span
  if (span) {
    check(span->z.shape().nd == 1 && span->z.shape()[0] == H && span->distance && int64_t(span->distance->size()) == n * S &&
              span->mem_len >= 1 && span->ramp >= 1,
          "attention: span ratios ", span->z.shape(), " for ", H, " heads, distances of ",
          span->distance ? span->distance->size() : 0,
          " for ", n, " x ", S);
    inputs.push_back(span->z);
    masked = {span->z.data(), nullptr, nullptr, arena.alloc_floats(size_t(B * H * n * S)), span->mem_len, span->ramp};
  }
  // The distances where the kernels run (the closure keeps the host copy for the CPU).
  const std::vector<int32_t> distance = span ? *span->distance : std::vector<int32_t>{};
  const int32_t* staged_distance = span && on_device() ? stage(distance.data(), distance.size()) : nullptr;
  masked.distance = staged_distance ? staged_distance : span ? distance.data() : nullptr;
  Var out = tape().output({B, n, I}, inputs);
  const AttentionDims d{B, n, H, Dh, S, bias ? bias.shape()[0] : 0};
  float* probs = arena.alloc_floats(size_t(B * H * n * S));
  const float* drop = nullptr;
  if (dropout_p > 0.f) {
    check(rng != nullptr, "attention: dropout needs a generator");
    drop = dropout_mask(dropout_p, *rng, B * H * n * S);
  }
  // The bucket table where the kernels run (the closure keeps the host copy for the CPU).
  const int32_t* staged = on_device() ? stage(bucket.data(), bucket.size()) : nullptr;
  kernel(cpu::attention_forward, cuda::attention_forward)(out.data(), probs, q.data(), rows.data(), int(rows.size()),
                                                          staged ? staged : bucket.data(), bias ? bias.data() : nullptr,
                                                          drop, d, masked);
  // A single query's key/value gradient waits in its cache's queue (ops.hpp, KVGradQueue).
  std::shared_ptr<KVGradQueue> queue;
  if (n == 1 && !grouped && !on_device())
    for (const KVSegment& s : segs) {
      check(!queue || !s.deferred || s.deferred == queue, "attention: segments of two key/value queues");
      if (s.deferred) queue = s.deferred;
    }
  if (out.requires_grad())
    tape().record("attention", out, [=, z = span ? span->z : Var()]() mutable {
      Tape& t = tape();
      // Rows of the queue's segments below its cutoff take their share later: the kernel sees
      // them without a gradient (a segment split at the cutoff), the part keeps where it goes.
      DeferredKVPart part{probs, drop, masked.raw, nullptr, q.data(), out.grad().data, S, {}, 0};
      int64_t cutoff = INT64_MIN;
      if (queue) {
        int64_t top = 0;
        for (const KVSegment& s : segs)
          if (s.deferred) top = std::max(top, s.row_begin + s.rows);
        cutoff = queue->open(top);
      }
      std::vector<KVRows> kernel_rows;
      int64_t key = 0;  // the first key of segment k
      for (size_t k = 0; k < segs.size(); key += segs[k].rows, ++k) {
        KVRows r = rows[k];
        if (k >= grouped) r.grad = kv_rows(segs[k], I, true).grad;
        const int64_t below = queue && segs[k].deferred ? std::clamp(cutoff - segs[k].row_begin, int64_t(0), r.rows) : 0;
        if (below) {
          check(part.nsegs < kMaxDeferredKVSegments && !r.heads, "attention: more than ", kMaxDeferredKVSegments,
                " segments of one key/value queue, or a mirrored one");
          part.segs[part.nsegs++] = {r.grad, r.batch_stride, segs[k].row_begin, below, key};
          kernel_rows.push_back({r.data, nullptr, r.batch_stride, below});
        }
        if (below < r.rows)
          kernel_rows.push_back({r.data + below * 2 * I, r.grad ? r.grad + below * 2 * I : nullptr, r.batch_stride,
                                 r.rows - below, r.heads, r.heads_rows});
      }
      float* dlogits = t.arena().alloc_floats(size_t(B * H * n * S));
      masked.distance = staged_distance ? staged_distance : distance.data();  // the closure's own copy on the CPU
      masked.dz = z && z.requires_grad() ? t.grad(z).data : nullptr;
      kernel(cpu::attention_backward, cuda::attention_backward)(
          t.grad(q).data, bias ? t.grad(bias).data : nullptr, dlogits, out.grad().data, q.data(), kernel_rows.data(),
          int(kernel_rows.size()), staged ? staged : bucket.data(), probs, drop, d, masked);
      if (grouped)
        group->add({segs.begin(), segs.begin() + std::ptrdiff_t(grouped)}, I, d,
                   {probs, drop, dlogits, q.data(), out.grad().data});
      if (part.nsegs) {
        part.dlogits = dlogits;
        queue->push(queue, part, B, H, Dh);
      }
    });
  return out;
}

void mirror_kv_rows(const KVCache& c, int64_t row, int64_t n) {
  if (!c.heads.data) return;
  const Shape &cs = c.diff.shape(), &hs = c.heads.shape;
  check(c.heads.device == Device::CPU && hs.nd == 4 && hs[1] == 2 && hs[2] == cs[1] && hs[0] % cs[0] == 0 &&
            hs[0] / cs[0] * hs[3] * 2 == cs[2] && row >= 0 && row + n <= cs[1],
        "mirror_kv_rows: mirror ", hs, " of cache ", cs, ", rows from ", row, " (", n, ")");
  cpu::mirror_kv_heads(c.heads.data, c.diff.data(), cs[0], cs[1], hs[0] / cs[0], hs[3], row, row + n);
}

namespace {

void check_projection(Var mem, const std::vector<KVCache>& caches, int64_t row) {
  const int64_t B = mem.shape()[0], n = mem.shape()[1], D = mem.shape()[2];
  for (const KVCache& c : caches) {
    const Shape& cs = c.diff.shape();
    check(mem.shape().nd == 3 && c.P.shape().nd == 2 && c.P.shape()[1] == D && cs.nd == 3 && cs[0] == B &&
              cs[2] == c.P.shape()[0] && row >= 0 && row + n <= cs[1],
          "project_memory: memory ", mem.shape(), " with projection ", c.P.shape(), " into rows from ", row, " of ", cs);
    check(c.cnst.data() == c.diff.data(), "project_memory: the two caches must share storage");
  }
}

// What project_memory's backward reads: the inputs, the normalized rows and the norm's statistics.
struct Projected {
  Var mem, norm_w, norm_b;
  std::vector<KVCache> caches;
  int64_t row, B, n, D;
  Tensor normed;  // (B*n, D)
  float *mean, *rstd;
};

// This projection's rows of both cache gradients: g_diff (B*n, KV) and g_all = g_diff + g_const
// (g_all is g_diff when no reader held the rows constant). Returns whether any reader did.
bool cache_row_grads(const Projected& p, const KVCache& c, float*& g_diff, float*& g_all) {
  Arena& a = tape().arena();
  const Device dev = a.device();
  const int64_t KV = c.P.shape()[0], R = c.diff.shape()[1], rows = p.n * KV, B = p.B;
  if (c.deferred) c.deferred->flush_from(p.row);  // the rows' gradient is read here
  const float* gd = c.diff.grad().data;  // a view no reader wrote has no buffer (policy none: cnst)
  const float* gc = c.cnst.grad().data;
  g_diff = a.alloc_floats(size_t(B * rows));
  g_all = gc ? a.alloc_floats(size_t(B * rows)) : g_diff;
  if (!on_device()) return cpu::gather_cache_grads(g_diff, g_all, gd, gc, B, R, KV, p.row, p.n);
  // The device: copies and one add; the second product always runs.
  if (gd) copy_rows(g_diff, rows, dev, gd + p.row * KV, R * KV, dev, B, rows);
  else fill_zero(dev, g_diff, size_t(B * rows));
  if (!gc) return false;
  copy_rows(g_all, rows, dev, g_diff, rows, dev, B, rows);
  cuda::add_rows(g_all, rows, gc + p.row * KV, R * KV, B, rows);
  return true;
}

// Rows of constant memory vectors (a received state): no gradient goes back into them, so the
// product g_all P exists only for the norm's parameters, and those gradients come cheaper from
// M = g_all^T xhat (kv x D): dw = colsum(P o M), db = P^T colsum(g_all). CPU.
void constant_rows_backward(const Projected& p) {
  Tape& t = tape();
  Arena& a = t.arena();
  const int64_t N = p.B * p.n, D = p.D;
  float* xhat = a.alloc_floats(size_t(N * D));
  cpu::layernorm_xhat(xhat, p.mem.data(), p.mean, p.rstd, N, D);
  for (const KVCache& c : p.caches) {
    const int64_t KV = c.P.shape()[0];
    float *g_diff, *g_all;
    cache_row_grads(p, c, g_diff, g_all);
    float* M = a.alloc_floats(size_t(KV * D));
    float* colsum = a.alloc_floats(size_t(KV));
    std::memset(M, 0, sizeof(float) * size_t(KV * D));
    std::memset(colsum, 0, sizeof(float) * size_t(KV));
    cpu::linear_backward_weight(M, g_all, xhat, N, D, KV);
    cpu::bias_backward(colsum, g_all, N, KV);
    // P's share goes with P's other (dy, x) pairs, so that all of P's gradient sums in one order
    // whether or not windows are recomputed (Tape::checkpoint).
    if (c.P.requires_grad()) defer_weight_grad(t.grad(c.P).data, nullptr, g_all, p.normed.data, N, D, KV);
    cpu::constant_rows_projection_backward(t.grad(p.norm_w).data, t.grad(p.norm_b).data, M, colsum, c.P.data(), KV, D);
  }
}

// The general path: dn_all, what the normalized vectors receive from every reader (trains P and
// the norm), and dn_diff, only from readers allowed to differentiate into the memory vectors.
// The first cache's products write them, later caches add theirs.
void general_backward(const Projected& p) {
  Tape& t = tape();
  Arena& a = t.arena();
  const Device dev = a.device();
  const int64_t N = p.B * p.n, ND = N * p.D;
  const auto axpy = kernel(cpu::axpy, cuda::axpy);
  float* dn_all = a.alloc_floats(size_t(ND));
  float* dn_diff = a.alloc_floats(size_t(ND));
  if (p.caches.empty()) fill_zero(dev, dn_all, size_t(ND)), fill_zero(dev, dn_diff, size_t(ND));
  for (const KVCache& c : p.caches) {
    const bool first = &c == &p.caches.front();
    const int64_t KV = c.P.shape()[0];
    float *g_diff, *g_all;
    const bool any_const = cache_row_grads(p, c, g_diff, g_all);
    if (c.P.requires_grad()) defer_weight_grad(t.grad(c.P).data, nullptr, g_all, p.normed.data, N, p.D, KV);
    float* prod = first ? dn_all : a.alloc_floats(size_t(ND));  // g_all P
    linear_input_grad(prod, g_all, c.P, N, /*accumulate=*/false, c.packs);
    if (!first) axpy(dn_all, 1.f, prod, ND);
    if (!p.mem.requires_grad()) continue;
    if (any_const) linear_input_grad(dn_diff, g_diff, c.P, N, /*accumulate=*/!first, c.packs);
    else if (first)  // no reader held these rows constant: the same product
      copy_bytes(dn_diff, dev, prod, dev, sizeof(float) * size_t(ND));
    else axpy(dn_diff, 1.f, prod, ND);
  }
  kernel(cpu::layernorm_backward_params, cuda::layernorm_backward_params)(
      t.grad(p.norm_w).data, t.grad(p.norm_b).data, dn_all, p.mem.data(), p.mean, p.rstd, N, p.D);
  layernorm_input_grad(t.grad_sink(p.mem), dn_diff, p.mem.data(), p.norm_w.data(), p.mean, p.rstd, N, p.D);
}

}  // namespace

void project_memory(Var mem, Var norm_w, Var norm_b, const std::vector<KVCache>& caches, int64_t row) {
  const profile::Scope prof("project_memory", profile::Phase::Forward);
  check_projection(mem, caches, row);
  Arena& arena = tape().arena();
  const Device dev = arena.device();
  Projected p{mem, norm_w, norm_b, caches, row, mem.shape()[0], mem.shape()[1], mem.shape()[2], {}, nullptr, nullptr};
  const int64_t N = p.B * p.n;
  // mem_norm once for all caches (one per layer without shared_kv).
  p.normed = arena.alloc({N, p.D});
  p.mean = arena.alloc_floats(size_t(N));
  p.rstd = arena.alloc_floats(size_t(N));
  kernel(cpu::layernorm_forward, cuda::layernorm_forward)(p.normed.data, p.mean, p.rstd, mem.data(), norm_w.data(),
                                                          norm_b.data(), N, p.D);
  for (const KVCache& c : caches) {
    const int64_t KV = c.P.shape()[0], R = c.diff.shape()[1];
    Tensor kv = arena.alloc({N, KV});
    linear_values(kv.data, p.normed.data, c.P, nullptr, N, c.packs);
    copy_rows(c.diff.data() + row * KV, R * KV, dev, kv.data, p.n * KV, dev, p.B, p.n * KV);
    mirror_kv_rows(c, row, p.n);
  }

  bool needs = mem.requires_grad() || norm_w.requires_grad() || norm_b.requires_grad();
  for (const KVCache& c : caches) needs = needs || c.P.requires_grad();
  if (!tape().recording() || !needs) return;
  tape().record("project_memory", Var(), [p] {
    if (!p.mem.requires_grad() && !on_device()) constant_rows_backward(p);
    else general_backward(p);
  });
}

}  // namespace fbt
