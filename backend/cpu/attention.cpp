// Attention of a window of n queries over S key/value rows gathered from several segments
// (memory rows of a cache, the window's own rows), with an additive per-head bucket bias and
// a visibility table. One (batch, head) pair per work item. A single query (the exact model)
// walks the key rows with vectorized dot products; a window of queries uses register-blocked
// products in a key-major layout (below) over strided row views (keys and values interleave in
// rows of width 2I), forward over segments merged where they are adjacent rows of one buffer, so
// values never depend on where a detachment policy splits the memory. Heads own disjoint columns, so the key/value gradients
// need no atomics; the bias gradient is reduced afterwards, one head per thread.
#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "backend/cpu/kernels.hpp"
#include "backend/cpu/simd.hpp"

namespace fbt::cpu {

namespace {

// One (batch, head)'s key rows in key order over the segments, and their gradient rows (null
// where a segment takes none); a key's value is I floats further. Per-thread storage, kept.
struct HeadKeys {
  std::vector<const float*> key;
  std::vector<float*> grad;
  void gather(const KVRows* segs, int nsegs, int64_t S, int64_t b, int64_t h, int64_t Dh, int64_t I) {
    key.resize(size_t(S)), grad.resize(size_t(S));
    size_t j = 0;
    for (int k = 0; k < nsegs; ++k) {
      const int64_t at = b * segs[k].batch_stride + h * Dh;
      for (int64_t r = 0; r < segs[k].rows; ++r, ++j) {
        key[j] = segs[k].data + at + r * 2 * I;
        grad[j] = segs[k].grad ? segs[k].grad + at + r * 2 * I : nullptr;
      }
    }
  }
};

// What a single query's backward adds to key j's gradient rows: dV += w dO with w = p m (the
// weight times its dropout multiplier) where neither is 0, dK += dL q where the key is live (its
// weight, or with a span its weight before the mask, is not 0). The kernel and the queued batches
// (add_deferred_kv_grads) both take it from here, so they make the same additions.
struct KeyShare {
  bool v, k;
  float w;
};
inline KeyShare key_share(float p, float m, float live) { return {m != 0.f && p != 0.f, live != 0.f, p * m}; }

// p[0:S] = softmax of the logits p over the keys with bk[j] >= 0 (bias added first when given),
// 0 elsewhere; returns false, leaving p all zeros, when no key is visible.
bool masked_softmax_row(float* p, const int32_t* bk, const float* bias, int64_t h, int64_t H, int64_t S) {
  float mx = -INFINITY;
  for (int64_t j = 0; j < S; ++j) {
    if (bk[j] < 0) continue;
    if (bias) p[j] += bias[bk[j] * H + h];
    mx = std::max(mx, p[j]);
  }
  if (mx == -INFINITY) {
    std::fill(p, p + S, 0.f);
    return false;
  }
  const simd::vf vmx = simd::vset1(mx);
  simd::each_vector(S, [&](const simd::Lanes& l) { l.store(p, simd::vexp(simd::vsub(l.load(p), vmx))); });
  float sum = 0.f;  // in key order; invisible keys zeroed
  for (int64_t j = 0; j < S; ++j) sum += (p[j] = bk[j] < 0 ? 0.f : p[j]);
  const float inv = 1.0f / sum;
  for (int64_t j = 0; j < S; ++j) p[j] *= inv;
  return true;
}

// ---- adaptive attention span (kernel_types.hpp, AttentionSpan) ----
// One (batch, head)'s block P:(S x n), key-major, of softmax weights: kept in raw, then each query
// column times the head's mask and renormalized. distance:(n x S) as the bucket table.
void span_forward(float* P, float* raw, const int32_t* distance, float z, const AttentionSpan& sp, int64_t S,
                  int64_t n) {
  std::copy(P, P + S * n, raw);
  for (int64_t i = 0; i < n; ++i) {
    float sum = 0.f;  // in key order
    for (int64_t j = 0; j < S; ++j) {
      float& p = P[j * n + i];
      if (p == 0.f) continue;  // invisible (or an exponential that underflowed)
      p *= std::clamp(span_ramp(z, distance[i * S + j], sp.mem_len, sp.ramp), 0.f, 1.f);
      sum += p;
    }
    const float den = sum + 1e-8f;
    for (int64_t j = 0; j < S; ++j) P[j * n + i] /= den;
  }
}

// The backward of span_forward and of the softmax before it: dL:(S x n) holds the gradient of
// the masked weights P on entry and leaves the logits'. With c = sum_j P_j g_j and
// kappa = sum_j P_j (g_j - c): dlogit_j = P_j (g_j - c) - raw_j kappa, and the mask of key j
// receives raw_j (g_j - c) / (sum_k raw_k m_k + 1e-8). Returns the block's share of dz.
float span_backward(float* dL, const float* P, const float* raw, const int32_t* distance, float z,
                    const AttentionSpan& sp, int64_t S, int64_t n) {
  const float slope = float(sp.mem_len) / float(sp.ramp);
  float dz = 0.f;
  for (int64_t i = 0; i < n; ++i) {
    float c = 0.f, sum = 0.f;
    for (int64_t j = 0; j < S; ++j) {
      const float r = raw[j * n + i];
      if (r == 0.f) continue;
      c += P[j * n + i] * dL[j * n + i];
      sum += r * std::clamp(span_ramp(z, distance[i * S + j], sp.mem_len, sp.ramp), 0.f, 1.f);
    }
    float kappa = 0.f;
    for (int64_t j = 0; j < S; ++j) kappa += P[j * n + i] * (dL[j * n + i] - c);
    const float den = sum + 1e-8f;
    for (int64_t j = 0; j < S; ++j) {
      const float r = raw[j * n + i];
      float& g = dL[j * n + i];
      if (r == 0.f) {
        g = 0.f;
        continue;
      }
      const float x = span_ramp(z, distance[i * S + j], sp.mem_len, sp.ramp), gc = g - c;
      if (x >= 0.f && x <= 1.f) dz += r * gc / den * slope;
      g = P[j * n + i] * gc - r * kappa;
    }
  }
  return dz;
}

// Adjacent segments over the same storage (the two gradient views of one cache) read as one;
// their head-major mirror too where it continues (else the merged segment reads its rows).
std::vector<KVRows> merged(const KVRows* segs, int nsegs, int64_t I, int64_t Dh) {
  std::vector<KVRows> out;
  for (int k = 0; k < nsegs; ++k) {
    const KVRows& next = segs[k];
    if (!out.empty() && out.back().batch_stride == next.batch_stride &&
        out.back().data + out.back().rows * 2 * I == next.data) {
      KVRows& last = out.back();
      const bool mirrored = last.heads && next.heads && last.heads_rows == next.heads_rows &&
                            last.heads + last.rows * Dh == next.heads;
      if (!mirrored) last.heads = nullptr;
      last.rows += next.rows;
      continue;
    }
    out.push_back(next);
  }
  return out;
}


// Calls f(NV, Part, mask) for a run of `width` < 4 kLanes columns of a row: NV (0 to 3) whole
// vectors as a compile-time constant and, when the width leaves one, a partial vector (Part
// true, `mask` its lanes). Every head size is vectorized: dim_head 8 or 24 with 16 lanes too.
template <typename F>
void with_columns(int64_t width, F f) {
  using simd::kLanes;
  const simd::vmask m = simd::lanes(width % kLanes);
  switch (width / kLanes * 2 + (width % kLanes != 0)) {
    case 1: return f(std::integral_constant<int, 0>{}, std::true_type{}, m);
    case 2: return f(std::integral_constant<int, 1>{}, std::false_type{}, m);
    case 3: return f(std::integral_constant<int, 1>{}, std::true_type{}, m);
    case 4: return f(std::integral_constant<int, 2>{}, std::false_type{}, m);
    case 5: return f(std::integral_constant<int, 2>{}, std::true_type{}, m);
    case 6: return f(std::integral_constant<int, 3>{}, std::false_type{}, m);
    case 7: return f(std::integral_constant<int, 3>{}, std::true_type{}, m);
    default: return;  // no columns
  }
}

// out[0:NV kLanes (+ part)] += sum_j weight(j) row(j)[...] over the S keys, skipping zero
// weights; the sums stay in registers across keys, each element one chain of FMAs in key order.
template <int NV, bool Part, typename Weight, typename Row>
void add_weighted_block(float* out, int64_t S, Weight weight, Row row, simd::vmask m) {
  using namespace simd;
  vf a[NV + 1];
  for (int v = 0; v < NV; ++v) a[v] = vload(out + v * kLanes);
  if constexpr (Part) a[NV] = vload_part(out + NV * kLanes, m);
  for (int64_t j = 0; j < S; ++j) {
    const float w = weight(j);
    if (w == 0.f) continue;
    const float* r = row(j);
    const vf vw = vset1(w);
    for (int v = 0; v < NV; ++v) a[v] = vfma(vw, vload(r + v * kLanes), a[v]);
    if constexpr (Part) a[NV] = vfma(vw, vload_part(r + NV * kLanes, m), a[NV]);
  }
  for (int v = 0; v < NV; ++v) vstore(out + v * kLanes, a[v]);
  if constexpr (Part) vstore_part(out + NV * kLanes, a[NV], m);
}

// out[0:Dh] += sum_j weight(j) row(j)[0:Dh] over the S keys (a single query's output or
// gradient), in blocks of up to 4 vectors.
template <typename Weight, typename Row>
void add_weighted_rows(float* out, int64_t S, int64_t Dh, Weight weight, Row row) {
  using simd::kLanes;
  int64_t c = 0;
  auto cols = [&](int64_t j) { return row(j) + c; };
  for (; c + 4 * kLanes <= Dh; c += 4 * kLanes) add_weighted_block<4, false>(out + c, S, weight, cols, simd::lanes(0));
  with_columns(Dh - c, [&](auto nv, auto part, simd::vmask m) {
    add_weighted_block<decltype(nv)::value, decltype(part)::value>(out + c, S, weight, cols, m);
  });
}

// A single query per (batch, head): dot products and weighted sums over key rows, vectorized
// along the head dimension.
void attention_forward_rows(float* out, float* probs, const float* q, const KVRows* segs, int nsegs,
                            const int32_t* bucket, const float* bias, const float* drop, const AttentionDims& d,
                            const AttentionSpan& span) {
  const int64_t B = d.B, n = d.n, H = d.H, Dh = d.Dh, S = d.S, I = H * Dh;
#pragma omp parallel for collapse(2) if (B * H * n * S * Dh > (1 << 15))
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      thread_local HeadKeys keys;
      keys.gather(segs, nsegs, S, b, h, Dh, I);
      const float* const* key = keys.key.data();
      for (int64_t i = 0; i < n; ++i) {
        const float* qi = q + (b * n + i) * I + h * Dh;
        float* p = probs + ((b * H + h) * n + i) * S;
        const int32_t* bk = bucket + i * S;
        for (int64_t j = 0; j < S; ++j) p[j] = bk[j] >= 0 ? simd::dot(qi, key[j], Dh) : 0.f;
        float* o = out + (b * n + i) * I + h * Dh;
        std::fill(o, o + Dh, 0.f);
        if (!masked_softmax_row(p, bk, bias, h, H, S)) continue;  // no visible key: zeros
        if (span.z) span_forward(p, span.raw + ((b * H + h) * n + i) * S, span.distance + i * S, span.z[h], span, S, 1);
        const float* dr = drop ? drop + ((b * H + h) * n + i) * S : nullptr;
        add_weighted_rows(o, S, Dh, [&](int64_t j) { return dr ? p[j] * dr[j] : p[j]; },
                          [&](int64_t j) { return key[j] + I; });
      }
    }
}

void attention_backward_rows(float* dq, float* dlogits, float* dz_parts, const float* dout, const float* q,
                             const KVRows* segs, int nsegs, const float* probs, const float* drop,
                             const AttentionDims& d, const AttentionSpan& span) {
  const int64_t B = d.B, n = d.n, H = d.H, Dh = d.Dh, S = d.S, I = H * Dh;
#pragma omp parallel for collapse(2) if (B * H * n * S * Dh > (1 << 15))
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      thread_local HeadKeys keys;
      keys.gather(segs, nsegs, S, b, h, Dh, I);
      const float* const* key = keys.key.data();
      float* const* grad = keys.grad.data();
      for (int64_t i = 0; i < n; ++i) {
        const float* doi = dout + (b * n + i) * I + h * Dh;
        const float* qi = q + (b * n + i) * I + h * Dh;
        const float* p = probs + ((b * H + h) * n + i) * S;
        const float* dr = drop ? drop + ((b * H + h) * n + i) * S : nullptr;
        float* dl = dlogits + ((b * H + h) * n + i) * S;
        // The keys whose logit has a gradient: the weighted ones, and with a span those it masked.
        const float* raw = span.z ? span.raw + ((b * H + h) * n + i) * S : nullptr;
        const float* live = raw ? raw : p;
        // dP_j = dout . v_j (times the dropout multiplier); dV_j += P~_j dout
        float dot = 0.f;
        for (int64_t j = 0; j < S; ++j) {
          dl[j] = 0.f;
          if (live[j] == 0.f) continue;
          const float m = dr ? dr[j] : 1.f;
          dl[j] = simd::dot(doi, key[j] + I, Dh) * m;
          dot += p[j] * dl[j];
          const KeyShare ks = key_share(p[j], m, live[j]);
          if (grad[j] && ks.v) simd::add_scaled(grad[j] + I, ks.w, doi, Dh);
        }
        // softmax (and span) backward, then dq += dl_j k_j, dk_j += dl_j q
        if (raw)
          dz_parts[b * H + h] += span_backward(dl, p, raw, span.distance + i * S, span.z[h], span, S, 1);
        else
          for (int64_t j = 0; j < S; ++j)
            if (p[j] != 0.f) dl[j] = p[j] * (dl[j] - dot);
        if (dq)
          add_weighted_rows(dq + (b * n + i) * I + h * Dh, S, Dh, [&](int64_t j) { return dl[j]; },
                            [&](int64_t j) { return key[j]; });
        for (int64_t j = 0; j < S; ++j)
          if (grad[j] && key_share(p[j], dr ? dr[j] : 1.f, live[j]).k) simd::add_scaled(grad[j], dl[j], qi, Dh);
      }
    }
}

// ---- a window of queries: register-blocked products in the key-major layout ----
// Per (batch, head) every product of the window is C (M x N) (+)= A (M x K) B (K x N) with B's
// rows contiguous vectors (key, value or query rows) and A read element by element at any
// strides: the logits come out key-major as K Q^T, the layout the softmax, the saved
// probabilities and every backward product read as they are. Only Q and dO (n x Dh) are
// transposed. Blocks of up to 6 rows of C by up to 4 vectors: each B vector loaded once per k
// meets 6 broadcast A elements.
struct Strides {
  int64_t row, col;  // A(r, k) = A[r * row + k * col]
};

template <int RB, int CV, bool Part = false>
void nn_block(float* C, int64_t ldc, const float* A, Strides as, const float* B, int64_t ldb, int64_t K, bool acc,
              simd::vmask m = simd::lanes(0)) {
  using namespace simd;
  constexpr int NV = CV + Part;  // the last one partial with Part
  auto load = [&](const float* p, int v) { return Part && v == CV ? vload_part(p, m) : vload(p); };
  vf c[RB][NV];
  for (int r = 0; r < RB; ++r)
    for (int v = 0; v < NV; ++v) c[r][v] = acc ? load(C + r * ldc + v * kLanes, v) : vzero();
  for (int64_t k = 0; k < K; ++k) {
    vf bv[NV];
    for (int v = 0; v < NV; ++v) bv[v] = load(B + k * ldb + v * kLanes, v);
    for (int r = 0; r < RB; ++r) {
      const vf a = vbroadcast(A + r * as.row + k * as.col);
      for (int v = 0; v < NV; ++v) c[r][v] = vfma(a, bv[v], c[r][v]);
    }
  }
  for (int r = 0; r < RB; ++r)
    for (int v = 0; v < NV; ++v) {
      if (Part && v == CV) vstore_part(C + r * ldc + v * kLanes, c[r][v], m);
      else vstore(C + r * ldc + v * kLanes, c[r][v]);
    }
}

template <int RB>
void nn_rows(float* C, int64_t ldc, const float* A, Strides as, const float* B, int64_t ldb, int64_t N, int64_t K,
             bool acc) {
  using simd::kLanes;
  int64_t j = 0;
  for (; j + 4 * kLanes <= N; j += 4 * kLanes) nn_block<RB, 4>(C + j, ldc, A, as, B + j, ldb, K, acc);
  for (; j + 2 * kLanes <= N; j += 2 * kLanes) nn_block<RB, 2>(C + j, ldc, A, as, B + j, ldb, K, acc);
  for (; j + kLanes <= N; j += kLanes) nn_block<RB, 1>(C + j, ldc, A, as, B + j, ldb, K, acc);
  if (j < N) nn_block<RB, 0, true>(C + j, ldc, A, as, B + j, ldb, K, acc, simd::lanes(N - j));  // the columns past whole vectors
}

// C (M x N) = A B, or C += A B with acc.
void small_nn(float* C, int64_t ldc, const float* A, Strides as, const float* B, int64_t ldb, int64_t M, int64_t N,
              int64_t K, bool acc) {
  int64_t i = 0;
  for (; i + 6 <= M; i += 6) nn_rows<6>(C + i * ldc, ldc, A + i * as.row, as, B, ldb, N, K, acc);
  const float* Ai = A + i * as.row;
  switch (M - i) {
    case 5: nn_rows<5>(C + i * ldc, ldc, Ai, as, B, ldb, N, K, acc); break;
    case 4: nn_rows<4>(C + i * ldc, ldc, Ai, as, B, ldb, N, K, acc); break;
    case 3: nn_rows<3>(C + i * ldc, ldc, Ai, as, B, ldb, N, K, acc); break;
    case 2: nn_rows<2>(C + i * ldc, ldc, Ai, as, B, ldb, N, K, acc); break;
    case 1: nn_rows<1>(C + i * ldc, ldc, Ai, as, B, ldb, N, K, acc); break;
    default: break;
  }
}

// Queries per row of a key-major product, padded to whole vectors: a window of 8 queries would
// otherwise leave the products of N = n columns to the scalar tail.
int64_t padded(int64_t n) { return (n + simd::kLanes - 1) / simd::kLanes * simd::kLanes; }

// dst (Dh x np) = the head's rows of x (n rows of stride I) transposed, zero past column n.
void head_transposed(float* dst, const float* x, int64_t n, int64_t np, int64_t Dh, int64_t I) {
  for (int64_t c = 0; c < Dh; ++c) {
    for (int64_t i = 0; i < n; ++i) dst[c * np + i] = x[i * I + c];
    std::fill(dst + c * np + n, dst + (c + 1) * np, 0.f);
  }
}

// C (S x n) = K X^T for the head's rows K (S x Dh, contiguous) and X^T (Dh x np) padded: the
// product runs on whole vectors into scratch and the first n columns are kept.
void key_major_product(float* C, const float* K, const float* Xt, int64_t S, int64_t n, int64_t np, int64_t Dh,
                       std::vector<float>& scratch_buf) {
  if (np == n) return small_nn(C, n, K, {Dh, 1}, Xt, n, S, n, Dh, false);
  if (int64_t(scratch_buf.size()) < S * np) scratch_buf.resize(size_t(S * np));
  small_nn(scratch_buf.data(), np, K, {Dh, 1}, Xt, np, S, np, Dh, false);
  for (int64_t j = 0; j < S; ++j) std::copy_n(scratch_buf.data() + j * np, n, C + j * n);
}

// dst (S x Dh) = the head's keys (or values) of batch b over all segments, contiguous: rows
// 2I apart alias in the L1 cache (4 KB for I = 512), and the products read them many times.
void head_rows(float* dst, const KVRows* segs, int nsegs, int64_t b, int64_t h, int64_t Dh, int64_t I, bool values) {
  for (int k = 0; k < nsegs; ++k) {
    const float* src = segs[k].data + b * segs[k].batch_stride + (values ? I : 0) + h * Dh;
    for (int64_t r = 0; r < segs[k].rows; ++r, dst += Dh) {  // inline: a call per 64 floats costs more
      const float* row = src + r * 2 * I;
      int64_t c = 0;
      for (; c + simd::kLanes <= Dh; c += simd::kLanes) simd::vstore(dst + c, simd::vload(row + c));
      if (c < Dh) {
        const simd::vmask m = simd::lanes(Dh - c);
        simd::vstore_part(dst + c, simd::vload_part(row + c, m), m);
      }
    }
  }
}

// The reverse for gradients: src (S x Dh) added to the head's key (or value) gradient rows of
// the segments that have one, row by row (streaming, where the products' blocks would stall on
// rows 2I apart).
void add_head_rows(const KVRows* segs, int nsegs, int64_t b, int64_t h, int64_t Dh, int64_t I, bool values,
                   const float* src) {
  for (int k = 0; k < nsegs; ++k) {
    if (segs[k].grad) {
      float* dst = segs[k].grad + b * segs[k].batch_stride + (values ? I : 0) + h * Dh;
      for (int64_t r = 0; r < segs[k].rows; ++r) {
        float* row = dst + r * 2 * I;
        const float* g = src + r * Dh;
        int64_t c = 0;
        for (; c + simd::kLanes <= Dh; c += simd::kLanes)
          simd::vstore(row + c, simd::vadd(simd::vload(row + c), simd::vload(g + c)));
        if (c < Dh) {
          const simd::vmask m = simd::lanes(Dh - c);
          simd::vstore_part(row + c, simd::vadd(simd::vload_part(row + c, m), simd::vload_part(g + c, m)), m);
        }
      }
    }
    src += segs[k].rows * Dh;
  }
}

// Per head, the additive term of every (key j, query i) logit, key-major: the bias where the
// key is visible, -inf where it is not (its exponential is then exactly 0).
std::vector<float> bias_terms(const int32_t* bucket, const float* bias, int64_t H, int64_t n, int64_t S) {
  std::vector<float> t(size_t(H * S * n));
#pragma omp parallel for if (H * S * n > (1 << 15))
  for (int64_t h = 0; h < H; ++h)
    for (int64_t j = 0; j < S; ++j)
      for (int64_t i = 0; i < n; ++i) {
        const int32_t bk = bucket[i * S + j];
        t[size_t((h * S + j) * n + i)] = bk < 0 ? -INFINITY : bias ? bias[bk * H + h] : 0.f;
      }
  return t;
}

// Softmax over the keys of each query column of L:(S x n) after adding the bias terms; a query
// with no visible key gets zeros. mx and inv: n floats of scratch.
void softmax_columns(float* L, const float* terms, int64_t S, int64_t n, float* mx, float* inv) {
  std::fill(mx, mx + n, -INFINITY);
  std::fill(inv, inv + n, 0.f);
  for (int64_t j = 0; j < S; ++j)
    for (int64_t i = 0; i < n; ++i) mx[i] = std::max(mx[i], L[j * n + i] += terms[j * n + i]);
  for (int64_t i = 0; i < n; ++i)
    if (mx[i] == -INFINITY) mx[i] = 0.f;  // all terms -inf: their exponentials are 0
  for (int64_t j = 0; j < S; ++j)
    for (int64_t i = 0; i < n; ++i) L[j * n + i] -= mx[i];
  simd::each_vector(S * n, [&](const simd::Lanes& l) { l.store(L, simd::vexp(l.load(L))); });
  for (int64_t j = 0; j < S; ++j)
    for (int64_t i = 0; i < n; ++i) inv[i] += L[j * n + i];
  for (int64_t i = 0; i < n; ++i) inv[i] = inv[i] > 0.f ? 1.f / inv[i] : 0.f;
  for (int64_t j = 0; j < S; ++j)
    for (int64_t i = 0; i < n; ++i) L[j * n + i] *= inv[i];
}

// Per-thread scratch of the window path, grown as needed and kept.
float* scratch(std::vector<float>& v, int64_t n) {
  if (int64_t(v.size()) < n) v.resize(size_t(n));
  return v.data();
}

// One (batch, head)'s keys and values, piece by piece over the segments: a mirrored segment's
// rows in place (head-major, contiguous), others gathered into scratch. Piece rows are
// consecutive keys from `at`; the products run piece by piece in key order, so the sums are
// the same whichever segments are mirrored.
struct HeadPiece {
  const float *k, *v;
  int64_t rows, at;
  bool grad;  // the segment takes a key/value gradient
};
void head_pieces(std::vector<HeadPiece>& pieces, const KVRows* segs, int nsegs, int64_t b, int64_t h, int64_t H,
                 int64_t Dh, int64_t I, std::vector<float>& scratch_buf) {
  int64_t copied = 0;
  for (int k = 0; k < nsegs; ++k) copied += segs[k].heads ? 0 : segs[k].rows;
  float* kc = scratch(scratch_buf, 2 * copied * Dh);  // gathered keys, then values
  float* vc = kc + copied * Dh;
  pieces.clear();
  int64_t at = 0;
  for (int k = 0; k < nsegs; ++k) {
    const KVRows& sg = segs[k];
    if (sg.heads) {
      const float* kh = sg.heads + (b * H + h) * 2 * sg.heads_rows * Dh;
      pieces.push_back({kh, kh + sg.heads_rows * Dh, sg.rows, at, sg.grad != nullptr});
    } else {
      head_rows(kc, &sg, 1, b, h, Dh, I, false);
      head_rows(vc, &sg, 1, b, h, Dh, I, true);
      pieces.push_back({kc, vc, sg.rows, at, sg.grad != nullptr});
      kc += sg.rows * Dh, vc += sg.rows * Dh;
    }
    at += sg.rows;
  }
}

void attention_forward_gemm(float* out, float* probs, const float* q, const KVRows* segs, int nsegs,
                            const int32_t* bucket, const float* bias, const float* drop, const AttentionDims& d,
                            const AttentionSpan& span) {
  const int64_t B = d.B, n = d.n, H = d.H, Dh = d.Dh, S = d.S, I = H * Dh;
  const std::vector<float> terms = bias_terms(bucket, bias, H, n, S);
#pragma omp parallel for collapse(2) if (B * H * n * S * Dh > (1 << 15))
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      thread_local std::vector<float> qt_buf, w_buf, col_buf, kv_buf, pad_buf;
      thread_local std::vector<HeadPiece> pieces;
      const int64_t np = padded(n);
      float* qt = scratch(qt_buf, Dh * np);
      float* col = scratch(col_buf, 2 * n);
      float* P = probs + (b * H + h) * S * n;  // (S x n)
      head_transposed(qt, q + b * n * I + h * Dh, n, np, Dh, I);
      head_pieces(pieces, segs, nsegs, b, h, H, Dh, I, kv_buf);
      for (const HeadPiece& pc : pieces)  // logits^T = K Q^T, rows [at, at + rows) per piece
        key_major_product(P + pc.at * n, pc.k, qt, pc.rows, n, np, Dh, pad_buf);
      softmax_columns(P, terms.data() + h * S * n, S, n, col, col + n);
      if (span.z) span_forward(P, span.raw + (b * H + h) * S * n, span.distance, span.z[h], span, S, n);
      const float* W = P;  // the weights of the values: P, or P times the dropout multipliers
      if (drop) {
        float* w = scratch(w_buf, S * n);
        const float* dr = drop + (b * H + h) * S * n;
        for (int64_t e = 0; e < S * n; ++e) w[e] = P[e] * dr[e];
        W = w;
      }
      for (const HeadPiece& pc : pieces)  // out = W V: A(i, j) = W^T[j][i], summed over the pieces in key order
        small_nn(out + b * n * I + h * Dh, I, W + pc.at * n, {1, n}, pc.v, Dh, n, Dh, pc.rows, &pc != &pieces[0]);
    }
}

void attention_backward_gemm(float* dq, float* dlogits, float* dz_parts, const float* dout, const float* q,
                             const KVRows* segs, int nsegs, const float* probs, const float* drop,
                             const AttentionDims& d, const AttentionSpan& span) {
  const int64_t B = d.B, n = d.n, H = d.H, Dh = d.Dh, S = d.S, I = H * Dh;
#pragma omp parallel for collapse(2) if (B * H * n * S * Dh > (1 << 15))
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      thread_local std::vector<float> dot_buf, w_buf, col_buf, kv_buf, grad_buf, pad_buf;
      thread_local std::vector<HeadPiece> pieces;
      const int64_t np = padded(n);
      const float* dO = dout + b * n * I + h * Dh;
      const float* Q = q + b * n * I + h * Dh;
      const float* P = probs + (b * H + h) * S * n;
      const float* dr = drop ? drop + (b * H + h) * S * n : nullptr;
      float* dL = dlogits + (b * H + h) * S * n;  // (S x n): d(weights), then d(logits)
      float* dot = scratch(dot_buf, Dh * np);
      float* col = scratch(col_buf, n);
      float* g = scratch(grad_buf, S * Dh);  // the head's dV, then dK: (S x Dh), then added to the rows
      head_transposed(dot, dO, n, np, Dh, I);
      head_pieces(pieces, segs, nsegs, b, h, H, Dh, I, kv_buf);
      for (const HeadPiece& pc : pieces)  // d(weights)^T = V dO^T
        key_major_product(dL + pc.at * n, pc.v, dot, pc.rows, n, np, Dh, pad_buf);
      const float* W = P;
      if (dr) {
        float* w = scratch(w_buf, S * n);
        for (int64_t e = 0; e < S * n; ++e) w[e] = P[e] * dr[e], dL[e] *= dr[e];
        W = w;
      }
      for (const HeadPiece& pc : pieces)  // dV = W^T dO, for the rows that take it
        if (pc.grad) small_nn(g + pc.at * Dh, Dh, W + pc.at * n, {n, 1}, dO, I, pc.rows, Dh, n, false);
      add_head_rows(segs, nsegs, b, h, Dh, I, true, g);
      // softmax backward per query column: dlogit = P (dP - <P, dP>) (with a span: its own)
      if (span.z) {
        dz_parts[b * H + h] +=
            span_backward(dL, P, span.raw + (b * H + h) * S * n, span.distance, span.z[h], span, S, n);
      } else {
        std::fill(col, col + n, 0.f);
        for (int64_t j = 0; j < S; ++j)
          for (int64_t i = 0; i < n; ++i) col[i] += P[j * n + i] * dL[j * n + i];
        for (int64_t j = 0; j < S; ++j)
          for (int64_t i = 0; i < n; ++i) dL[j * n + i] = P[j * n + i] * (dL[j * n + i] - col[i]);
      }
      if (dq)
        for (const HeadPiece& pc : pieces)  // dQ += dL K, over the pieces in key order
          small_nn(dq + b * n * I + h * Dh, I, dL + pc.at * n, {1, n}, pc.k, Dh, n, Dh, pc.rows, true);
      for (const HeadPiece& pc : pieces)  // dK = dL^T Q
        if (pc.grad) small_nn(g + pc.at * Dh, Dh, dL + pc.at * n, {n, 1}, Q, I, pc.rows, Dh, n, false);
      add_head_rows(segs, nsegs, b, h, Dh, I, false, g);
    }
}

}  // namespace

void attention_forward(float* out, float* probs, const float* q, const KVRows* segs, int nsegs,
                       const int32_t* bucket, const float* bias, const float* drop, const AttentionDims& d,
                       const AttentionSpan& span) {
  if (d.n == 1) return attention_forward_rows(out, probs, q, segs, nsegs, bucket, bias, drop, d, span);
  const std::vector<KVRows> m = merged(segs, nsegs, d.H * d.Dh, d.Dh);
  attention_forward_gemm(out, probs, q, m.data(), int(m.size()), bucket, bias, drop, d, span);
}

void attention_backward(float* dq, float* dbias, float* dlogits, const float* dout, const float* q,
                        const KVRows* segs, int nsegs, const int32_t* bucket, const float* probs,
                        const float* drop, const AttentionDims& d, const AttentionSpan& span) {
  // Each (batch, head)'s share of the span gradient, summed over the batch in order afterwards.
  std::vector<float> dz_parts(span.z ? size_t(d.B * d.H) : 0, 0.f);
  if (d.n == 1) attention_backward_rows(dq, dlogits, dz_parts.data(), dout, q, segs, nsegs, probs, drop, d, span);
  else attention_backward_gemm(dq, dlogits, dz_parts.data(), dout, q, segs, nsegs, probs, drop, d, span);
  if (span.dz)
    for (int64_t h = 0; h < d.H; ++h)
      for (int64_t b = 0; b < d.B; ++b) span.dz[h] += dz_parts[size_t(b * d.H + h)];
  if (!dbias) return;
  const int64_t B = d.B, n = d.n, H = d.H, S = d.S, nS = n * S;
  // The bucket table is shared by the batch: sum over it first (vectorized), then scatter once.
  // Head h owns column h of dbias: one thread per head, a fixed order. dlogits are key-major:
  // element j * n + i is query i's logit of key j.
  std::vector<float> summed(size_t(H * nS), 0.f);
#pragma omp parallel for if (B * nS * H > (1 << 15))
  for (int64_t h = 0; h < H; ++h) {
    float* s = summed.data() + h * nS;
    for (int64_t b = 0; b < B; ++b) {
      const float* dl = dlogits + (b * H + h) * nS;
#pragma omp simd
      for (int64_t k = 0; k < nS; ++k) s[k] += dl[k];
    }
    for (int64_t j = 0; j < S; ++j)
      for (int64_t i = 0; i < n; ++i)
        if (const int32_t bk = bucket[i * S + j]; bk >= 0) dbias[bk * H + h] += s[j * n + i];
  }
}

void attention_kv_grad_sum(const KVRows* segs, int nsegs, const AttentionGradPart* parts, int nparts,
                           const AttentionDims& d) {
  const int64_t B = d.B, n = d.n, H = d.H, Dh = d.Dh, S = d.S, I = H * Dh;
  int64_t M = 0;
  for (int k = 0; k < nsegs; ++k) M += segs[k].rows;
  if (nparts == 0 || M == 0) return;
#pragma omp parallel for collapse(2) if (B * H * nparts * n * M * Dh > (1 << 15))
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      thread_local std::vector<float> gv_buf, gk_buf, w_buf;
      float* gv = scratch(gv_buf, M * Dh);  // (M x Dh): summed dV, then added to the rows
      float* gk = scratch(gk_buf, M * Dh);
      const int64_t at = (b * H + h) * S * n;  // this (batch, head)'s (S x n) block; keys [0, M) first
      for (int m = 0; m < nparts; ++m) {
        const AttentionGradPart& p = parts[m];
        const float* W = p.probs + at;
        if (p.drop) {
          float* w = scratch(w_buf, M * n);
          for (int64_t e = 0; e < M * n; ++e) w[e] = W[e] * p.drop[at + e];
          W = w;
        }
        small_nn(gv, Dh, W, {n, 1}, p.dout + b * n * I + h * Dh, I, M, Dh, n, m > 0);  // += W^T dO
        small_nn(gk, Dh, p.dlogits + at, {n, 1}, p.q + b * n * I + h * Dh, I, M, Dh, n, m > 0);  // += dL^T Q
      }
      add_head_rows(segs, nsegs, b, h, Dh, I, true, gv);
      add_head_rows(segs, nsegs, b, h, Dh, I, false, gk);
    }
}

namespace {

// The segment of a deferred part that holds cache row `row`, or null.
const DeferredKVSegment* segment_of(const DeferredKVPart& pt, int64_t row) {
  for (int k = 0; k < pt.nsegs; ++k)
    if (row >= pt.segs[k].row_begin && row < pt.segs[k].row_begin + pt.segs[k].rows) return &pt.segs[k];
  return nullptr;
}

}  // namespace

void add_deferred_kv_grads(const DeferredKVPart* parts, int nparts, int64_t B, int64_t H, int64_t Dh, int64_t r0,
                           int64_t r1) {
  using namespace simd;
  const int64_t I = H * Dh;
  if (nparts == 0 || r1 <= r0) return;
  // Per (batch, head), kRows rows and kCols vectors of columns at a time: the rows' keys and
  // values stay in registers while the parts pass over them in order (stored and reloaded where a
  // part's share goes to the rows' other gradient view), one chain of FMAs per element, as the
  // kernel that adds them at once makes it. A group whose rows a part splits between its two
  // segments, and the last rows short of a group, go one by one through memory: the same operations.
  constexpr int kRows = kLanes == 16 ? 4 : 2, kCols = 2;  // 16 or 8 accumulators
  // Per group of kRows rows: whether each part holds the rows it reads of them in one segment (the
  // group then goes through registers), and per part that segment (-1: none) and which rows.
  const int64_t groups = (r1 - r0 + kRows - 1) / kRows;
  std::vector<uint8_t> whole(static_cast<size_t>(groups));
  std::vector<int8_t> seg(static_cast<size_t>(groups * nparts));
  std::vector<uint8_t> held(static_cast<size_t>(groups * nparts));  // bit i: row i of the group
  for (int64_t gi = 0; gi < groups; ++gi) {
    const int64_t r = r0 + gi * kRows, n = std::min<int64_t>(kRows, r1 - r);
    bool w = n == kRows;
    for (int t = 0; t < nparts; ++t) {
      const DeferredKVSegment* one = nullptr;
      uint8_t bits = 0;
      for (int64_t i = 0; i < n; ++i)
        if (const DeferredKVSegment* sg = segment_of(parts[t], r + i)) {
          w = w && (!one || sg == one);
          one = sg, bits |= uint8_t(1u << i);
        }
      seg[size_t(gi * nparts + t)] = int8_t(one ? one - parts[t].segs : -1);
      held[size_t(gi * nparts + t)] = bits;
    }
    whole[size_t(gi)] = w;
  }
#pragma omp parallel for collapse(2) if (B * H * nparts * (r1 - r0) * Dh > (1 << 15))
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t c = 0; c < Dh; c += kCols * kLanes) {
        vmask mask[kCols];
        for (int j = 0; j < kCols; ++j) mask[j] = lanes(std::clamp<int64_t>(Dh - c - j * kLanes, 0, kLanes));
        const int64_t col = b * I + h * Dh + c;  // of q and dO
        // Where row `row` of part pt keeps its keys' columns, and its weight's index.
        auto place = [&](const DeferredKVPart& pt, const DeferredKVSegment& sg, int64_t row, float*& g, int64_t& at) {
          g = sg.grad + b * sg.batch_stride + (row - sg.row_begin) * 2 * I + h * Dh + c;
          at = (b * H + h) * pt.S + sg.key + (row - sg.row_begin);
        };
        auto share = [](const DeferredKVPart& pt, int64_t at) {
          const float p = pt.probs[at];
          return key_share(p, pt.drop ? pt.drop[at] : 1.f, pt.raw ? pt.raw[at] : p);
        };
        // Row `row` through memory, part after part.
        auto one_by_one = [&](int64_t row) {
          for (int t = 0; t < nparts; ++t) {
            const DeferredKVPart& pt = parts[t];
            const DeferredKVSegment* sg = segment_of(pt, row);
            if (!sg) continue;
            float* g;
            int64_t at;
            place(pt, *sg, row, g, at);
            const KeyShare ks = share(pt, at);
            for (int j = 0; j < kCols; ++j) {
              float *gk = g + j * kLanes, *gv = gk + I;
              if (ks.v)
                vstore_part(gv, vfma(vset1(ks.w), vload_part(pt.dout + col + j * kLanes, mask[j]), vload_part(gv, mask[j])),
                            mask[j]);
              if (ks.k)
                vstore_part(gk, vfma(vset1(pt.dlogits[at]), vload_part(pt.q + col + j * kLanes, mask[j]), vload_part(gk, mask[j])),
                            mask[j]);
            }
          }
        };
        for (int64_t gi = 0; gi < groups; ++gi) {
          const int64_t r = r0 + gi * kRows;
          if (!whole[size_t(gi)]) {
            for (int64_t row = r; row < std::min(r + kRows, r1); ++row) one_by_one(row);
            continue;
          }
          vf k[kRows][kCols], v[kRows][kCols];  // the rows' keys and values
          float* dest = nullptr;                // the first row's keys whose sums are in k, v
          auto store = [&] {
            if (!dest) return;
#pragma GCC unroll 8
            for (int i = 0; i < kRows; ++i)
#pragma GCC unroll 2
              for (int j = 0; j < kCols; ++j) {
                vstore_part(dest + i * 2 * I + j * kLanes, k[i][j], mask[j]);
                vstore_part(dest + i * 2 * I + I + j * kLanes, v[i][j], mask[j]);
              }
          };
          for (int t = 0; t < nparts; ++t) {
            const DeferredKVPart& pt = parts[t];
            const int8_t sk = seg[size_t(gi * nparts + t)];
            if (sk < 0) continue;
            const unsigned rows = held[size_t(gi * nparts + t)];
            float* g;  // row r's place in the segment's view (r itself may lie outside the segment:
            int64_t at;  // its registers are then stored back unchanged)
            place(pt, pt.segs[sk], r, g, at);
            if (g != dest) {
              store();
              dest = g;
#pragma GCC unroll 8
              for (int i = 0; i < kRows; ++i)
#pragma GCC unroll 2
                for (int j = 0; j < kCols; ++j) {
                  k[i][j] = vload_part(g + i * 2 * I + j * kLanes, mask[j]);
                  v[i][j] = vload_part(g + i * 2 * I + I + j * kLanes, mask[j]);
                }
            }
            vf dout[kCols], q[kCols];
#pragma GCC unroll 2
            for (int j = 0; j < kCols; ++j)
              dout[j] = vload_part(pt.dout + col + j * kLanes, mask[j]), q[j] = vload_part(pt.q + col + j * kLanes, mask[j]);
#pragma GCC unroll 8
            for (int i = 0; i < kRows; ++i) {
              if (!(rows >> i & 1u)) continue;
              const KeyShare ks = share(pt, at + i);
              if (ks.v) {
                const vf vw = vset1(ks.w);
#pragma GCC unroll 2
                for (int j = 0; j < kCols; ++j) v[i][j] = vfma(vw, dout[j], v[i][j]);
              }
              if (ks.k) {
                const vf vd = vset1(pt.dlogits[at + i]);
#pragma GCC unroll 2
                for (int j = 0; j < kCols; ++j) k[i][j] = vfma(vd, q[j], k[i][j]);
              }
            }
          }
          store();
        }
      }
}

void mirror_kv_heads(float* heads, const float* cache, int64_t B, int64_t R, int64_t H, int64_t Dh, int64_t r0,
                     int64_t r1) {
  const int64_t I = H * Dh;
  const KVRows rows{cache + r0 * 2 * I, nullptr, R * 2 * I, r1 - r0};
#pragma omp parallel for collapse(2) if (B * H * (r1 - r0) * Dh > (1 << 15))
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int kv = 0; kv < 2; ++kv)
        head_rows(heads + (((b * H + h) * 2 + kv) * R + r0) * Dh, &rows, 1, b, h, Dh, I, kv == 1);
}

}  // namespace fbt::cpu
