// Attention of a window of n queries over S key/value rows gathered from several segments
// (memory rows of a cache, the window's own rows), with an additive per-head bucket bias and
// a visibility table. One (batch, head) pair per work item. A single query (the exact model)
// walks the key rows with vectorized dot products; a window of queries uses small Eigen matrix
// products over strided row views (keys and values interleave in rows of width 2I), forward over
// segments merged where they are adjacent rows of one buffer, so values never depend on where a
// detachment policy splits the memory. Heads own disjoint columns, so the key/value gradients
// need no atomics; the bias gradient is reduced afterwards, one head per thread.
#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <vector>

#include "ops/cpu/kernels.hpp"
#include "ops/cpu/simd.hpp"

namespace fbt::cpu {

namespace {

using MatR = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using Strided = Eigen::Map<MatR, 0, Eigen::OuterStride<>>;
using CStrided = Eigen::Map<const MatR, 0, Eigen::OuterStride<>>;
using MapR = Eigen::Map<MatR>;

// The keys (or values) of head h in segment k for batch b: (rows x Dh), row stride 2I.
CStrided head_rows(const KVRows& s, int64_t b, int64_t h, int64_t Dh, int64_t I, bool values) {
  return CStrided(s.data + b * s.batch_stride + (values ? I : 0) + h * Dh, s.rows, Dh, Eigen::OuterStride<>(2 * I));
}
Strided head_grad_rows(const KVRows& s, int64_t b, int64_t h, int64_t Dh, int64_t I, bool values) {
  return Strided(s.grad + b * s.batch_stride + (values ? I : 0) + h * Dh, s.rows, Dh, Eigen::OuterStride<>(2 * I));
}

// Row pointer of global key index j (0..S-1) for batch b: walks the segment list.
struct RowIndex {
  std::vector<int> seg;
  std::vector<int64_t> row;
  RowIndex(const KVRows* segs, int nsegs, int64_t S) : seg(size_t(S)), row(size_t(S)) {
    int64_t j = 0;
    for (int k = 0; k < nsegs; ++k)
      for (int64_t r = 0; r < segs[k].rows; ++r, ++j) {
        seg[size_t(j)] = k;
        row[size_t(j)] = r;
      }
  }
};

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
  Eigen::Map<Eigen::ArrayXf> row(p, S);
  row = (row - mx).exp();  // vectorized; invisible keys are zeroed next
  float sum = 0.f;
  for (int64_t j = 0; j < S; ++j) sum += (p[j] = bk[j] < 0 ? 0.f : p[j]);
  row *= 1.0f / sum;
  return true;
}

// Adjacent segments over the same storage (the two gradient views of one cache) read as one.
std::vector<KVRows> merged(const KVRows* segs, int nsegs, int64_t I) {
  std::vector<KVRows> out;
  for (int k = 0; k < nsegs; ++k) {
    if (!out.empty() && out.back().batch_stride == segs[k].batch_stride &&
        out.back().data + out.back().rows * 2 * I == segs[k].data) {
      out.back().rows += segs[k].rows;
      continue;
    }
    out.push_back(segs[k]);
  }
  return out;
}


// out[0:Dh] += sum_j weight(j) row(j)[0:Dh] over the S keys, skipping zero weights; the sums
// stay in registers across keys (a single query's output or gradient).
template <typename Weight, typename Row>
void add_weighted_rows(float* out, int64_t S, int64_t Dh, Weight weight, Row row) {
  using namespace simd;
  int64_t c = 0;
  for (; c + 4 * kLanes <= Dh; c += 4 * kLanes) {
    vf a0 = vload(out + c), a1 = vload(out + c + kLanes), a2 = vload(out + c + 2 * kLanes), a3 = vload(out + c + 3 * kLanes);
    for (int64_t j = 0; j < S; ++j) {
      const float w = weight(j);
      if (w == 0.f) continue;
      const float* r = row(j) + c;
      const vf vw = vset1(w);
      a0 = vfma(vw, vload(r), a0), a1 = vfma(vw, vload(r + kLanes), a1);
      a2 = vfma(vw, vload(r + 2 * kLanes), a2), a3 = vfma(vw, vload(r + 3 * kLanes), a3);
    }
    vstore(out + c, a0), vstore(out + c + kLanes, a1), vstore(out + c + 2 * kLanes, a2), vstore(out + c + 3 * kLanes, a3);
  }
  for (; c < Dh; ++c) {
    float s = out[c];
    for (int64_t j = 0; j < S; ++j)
      if (const float w = weight(j); w != 0.f) s += w * row(j)[c];
    out[c] = s;
  }
}

// A single query per (batch, head): dot products and weighted sums over key rows, vectorized
// along the head dimension.
void attention_forward_rows(float* out, float* probs, const float* q, const KVRows* segs, int nsegs,
                            const int32_t* bucket, const float* bias, const float* drop, const AttentionDims& d) {
  const int64_t B = d.B, n = d.n, H = d.H, Dh = d.Dh, S = d.S, I = H * Dh;
  RowIndex idx(segs, nsegs, S);
#pragma omp parallel for collapse(2) if (B * H * n * S * Dh > (1 << 15))
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      // Key j's row for this batch and head (values follow the keys, I further).
      auto key = [&](int64_t j) {
        const KVRows& sg = segs[idx.seg[size_t(j)]];
        return sg.data + b * sg.batch_stride + idx.row[size_t(j)] * 2 * I + h * Dh;
      };
      for (int64_t i = 0; i < n; ++i) {
        const float* qi = q + (b * n + i) * I + h * Dh;
        float* p = probs + ((b * H + h) * n + i) * S;
        const int32_t* bk = bucket + i * S;
        for (int64_t j = 0; j < S; ++j) p[j] = bk[j] >= 0 ? simd::dot(qi, key(j), Dh) : 0.f;
        float* o = out + (b * n + i) * I + h * Dh;
        std::fill(o, o + Dh, 0.f);
        if (!masked_softmax_row(p, bk, bias, h, H, S)) continue;  // no visible key: zeros
        const float* dr = drop ? drop + ((b * H + h) * n + i) * S : nullptr;
        add_weighted_rows(o, S, Dh, [&](int64_t j) { return dr ? p[j] * dr[j] : p[j]; },
                          [&](int64_t j) { return key(j) + I; });
      }
    }
}

void attention_backward_rows(float* dq, float* dbias, float* dlogits, const float* dout, const float* q,
                             const KVRows* segs, int nsegs, const int32_t* bucket, const float* probs,
                             const float* drop, const AttentionDims& d) {
  const int64_t B = d.B, n = d.n, H = d.H, Dh = d.Dh, S = d.S, I = H * Dh;
  RowIndex idx(segs, nsegs, S);
#pragma omp parallel for collapse(2) if (B * H * n * S * Dh > (1 << 15))
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      // Offset of key j's row for this batch and head, in its segment's data and grad.
      auto offset = [&](int64_t j) {
        return b * segs[idx.seg[size_t(j)]].batch_stride + idx.row[size_t(j)] * 2 * I + h * Dh;
      };
      auto seg = [&](int64_t j) -> const KVRows& { return segs[idx.seg[size_t(j)]]; };
      for (int64_t i = 0; i < n; ++i) {
        const float* doi = dout + (b * n + i) * I + h * Dh;
        const float* qi = q + (b * n + i) * I + h * Dh;
        const float* p = probs + ((b * H + h) * n + i) * S;
        const float* dr = drop ? drop + ((b * H + h) * n + i) * S : nullptr;
        float* dl = dlogits + ((b * H + h) * n + i) * S;
        // dP_j = dout . v_j (times the dropout multiplier); dV_j += P~_j dout
        float dot = 0.f;
        for (int64_t j = 0; j < S; ++j) {
          dl[j] = 0.f;
          if (p[j] == 0.f) continue;
          const KVRows& sg = seg(j);
          const int64_t off = offset(j) + I;
          const float m = dr ? dr[j] : 1.f;
          dl[j] = simd::dot(doi, sg.data + off, Dh) * m;
          dot += p[j] * dl[j];
          if (sg.grad && m != 0.f) simd::add_scaled(sg.grad + off, p[j] * m, doi, Dh);
        }
        // softmax backward, then dq += dl_j k_j, dk_j += dl_j q
        for (int64_t j = 0; j < S; ++j)
          if (p[j] != 0.f) dl[j] = p[j] * (dl[j] - dot);
        if (dq)
          add_weighted_rows(dq + (b * n + i) * I + h * Dh, S, Dh, [&](int64_t j) { return dl[j]; },
                            [&](int64_t j) { return seg(j).data + offset(j); });
        for (int64_t j = 0; j < S; ++j)
          if (p[j] != 0.f && seg(j).grad) simd::add_scaled(seg(j).grad + offset(j), dl[j], qi, Dh);
      }
    }
}

void attention_forward_gemm(float* out, float* probs, const float* q, const KVRows* segs, int nsegs,
                       const int32_t* bucket, const float* bias, const float* drop, const AttentionDims& d) {
  const int64_t B = d.B, n = d.n, H = d.H, Dh = d.Dh, S = d.S, I = H * Dh;
#pragma omp parallel for collapse(2) if (B * H * n * S * Dh > (1 << 15))
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      CStrided Q(q + b * n * I + h * Dh, n, Dh, Eigen::OuterStride<>(I));
      MapR P(probs + (b * H + h) * n * S, n, S);
      int64_t off = 0;
      for (int k = 0; k < nsegs; ++k) {  // logits = Q K^T
        if (segs[k].rows) P.middleCols(off, segs[k].rows).noalias() = Q * head_rows(segs[k], b, h, Dh, I, false).transpose();
        off += segs[k].rows;
      }
      for (int64_t i = 0; i < n; ++i)  // bias, visibility, softmax (no visible key: zeros, zero output)
        masked_softmax_row(probs + ((b * H + h) * n + i) * S, bucket + i * S, bias, h, H, S);
      MatR kept;  // dropped-out probabilities, when dropout is on
      if (drop) kept = P.cwiseProduct(Eigen::Map<const MatR>(drop + (b * H + h) * n * S, n, S));
      Strided O(out + b * n * I + h * Dh, n, Dh, Eigen::OuterStride<>(I));
      O.setZero();
      off = 0;
      for (int k = 0; k < nsegs; ++k) {  // out = P V
        if (segs[k].rows) {
          if (drop) O.noalias() += kept.middleCols(off, segs[k].rows) * head_rows(segs[k], b, h, Dh, I, true);
          else O.noalias() += P.middleCols(off, segs[k].rows) * head_rows(segs[k], b, h, Dh, I, true);
        }
        off += segs[k].rows;
      }
    }
}

void attention_backward_gemm(float* dq, float* dbias, float* dlogits, const float* dout, const float* q,
                        const KVRows* segs, int nsegs, const int32_t* bucket, const float* probs,
                        const float* drop, const AttentionDims& d) {
  const int64_t B = d.B, n = d.n, H = d.H, Dh = d.Dh, S = d.S, I = H * Dh;
#pragma omp parallel for collapse(2) if (B * H * n * S * Dh > (1 << 15))
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      CStrided dO(dout + b * n * I + h * Dh, n, Dh, Eigen::OuterStride<>(I));
      CStrided Q(q + b * n * I + h * Dh, n, Dh, Eigen::OuterStride<>(I));
      Eigen::Map<const MatR> P(probs + (b * H + h) * n * S, n, S);
      MapR dL(dlogits + (b * H + h) * n * S, n, S);
      MatR kept;
      if (drop) kept = P.cwiseProduct(Eigen::Map<const MatR>(drop + (b * H + h) * n * S, n, S));
      int64_t off = 0;
      for (int k = 0; k < nsegs; ++k) {  // d(kept P) = dO V^T; dV += (kept P)^T dO
        const int64_t r = segs[k].rows;
        if (r) {
          dL.middleCols(off, r).noalias() = dO * head_rows(segs[k], b, h, Dh, I, true).transpose();
          if (segs[k].grad) {
            if (drop) head_grad_rows(segs[k], b, h, Dh, I, true).noalias() += kept.middleCols(off, r).transpose() * dO;
            else head_grad_rows(segs[k], b, h, Dh, I, true).noalias() += P.middleCols(off, r).transpose() * dO;
          }
        }
        off += r;
      }
      if (drop) dL.array() *= Eigen::Map<const MatR>(drop + (b * H + h) * n * S, n, S).array();
      for (int64_t i = 0; i < n; ++i) {  // softmax backward: dlogit = P (dP - <P, dP>)
        const float dot = P.row(i).dot(dL.row(i));
        dL.row(i) = (P.row(i).array() * (dL.row(i).array() - dot)).matrix();
      }
      Strided dQ(dq ? dq + b * n * I + h * Dh : nullptr, dq ? n : 0, Dh, Eigen::OuterStride<>(I));
      off = 0;
      for (int k = 0; k < nsegs; ++k) {  // dQ += dL K; dK += dL^T Q
        const int64_t r = segs[k].rows;
        if (r) {
          if (dq) dQ.noalias() += dL.middleCols(off, r) * head_rows(segs[k], b, h, Dh, I, false);
          if (segs[k].grad) head_grad_rows(segs[k], b, h, Dh, I, false).noalias() += dL.middleCols(off, r).transpose() * Q;
        }
        off += r;
      }
    }
}

}  // namespace

void attention_forward(float* out, float* probs, const float* q, const KVRows* segs, int nsegs,
                       const int32_t* bucket, const float* bias, const float* drop, const AttentionDims& d) {
  if (d.n == 1) return attention_forward_rows(out, probs, q, segs, nsegs, bucket, bias, drop, d);
  const std::vector<KVRows> m = merged(segs, nsegs, d.H * d.Dh);
  attention_forward_gemm(out, probs, q, m.data(), int(m.size()), bucket, bias, drop, d);
}

void attention_backward(float* dq, float* dbias, float* dlogits, const float* dout, const float* q,
                        const KVRows* segs, int nsegs, const int32_t* bucket, const float* probs,
                        const float* drop, const AttentionDims& d) {
  if (d.n == 1) attention_backward_rows(dq, dbias, dlogits, dout, q, segs, nsegs, bucket, probs, drop, d);
  else attention_backward_gemm(dq, dbias, dlogits, dout, q, segs, nsegs, bucket, probs, drop, d);
  if (!dbias) return;
  const int64_t B = d.B, n = d.n, H = d.H, S = d.S, nS = n * S;
  // The bucket table is shared by the batch: sum over it first (vectorized), then scatter once.
  // Head h owns column h of dbias: one thread per head, a fixed order.
  std::vector<float> summed(size_t(H * nS), 0.f);
#pragma omp parallel for if (B * nS * H > (1 << 15))
  for (int64_t h = 0; h < H; ++h) {
    float* s = summed.data() + h * nS;
    for (int64_t b = 0; b < B; ++b) {
      const float* dl = dlogits + (b * H + h) * nS;
#pragma omp simd
      for (int64_t k = 0; k < nS; ++k) s[k] += dl[k];
    }
    for (int64_t k = 0; k < nS; ++k)
      if (bucket[k] >= 0) dbias[bucket[k] * H + h] += s[k];
  }
}

}  // namespace fbt::cpu
