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


void attention_forward_rows(float* out, float* probs, const float* q, const KVRows* segs, int nsegs,
                       const int32_t* bucket, const float* bias, const float* drop, const AttentionDims& d) {
  const int64_t B = d.B, n = d.n, H = d.H, Dh = d.Dh, S = d.S, I = H * Dh;
  RowIndex idx(segs, nsegs, S);
#pragma omp parallel for collapse(2) if (B * H * n * S * Dh > (1 << 15))
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      for (int64_t i = 0; i < n; ++i) {
        const float* qi = q + (b * n + i) * I + h * Dh;
        float* p = probs + ((b * H + h) * n + i) * S;
        const int32_t* bk = bucket + i * S;
        float mx = -INFINITY;
        for (int64_t j = 0; j < S; ++j) {
          if (bk[j] < 0) {
            p[j] = -INFINITY;
            continue;
          }
          const KVRows& sg = segs[idx.seg[size_t(j)]];
          const float* kj = sg.data + b * sg.batch_stride + idx.row[size_t(j)] * 2 * I + h * Dh;
          float s = 0.f;
#pragma omp simd reduction(+ : s)
          for (int64_t c = 0; c < Dh; ++c) s += qi[c] * kj[c];
          if (bias) s += bias[bk[j] * H + h];
          p[j] = s;
          mx = std::max(mx, s);
        }
        float* o = out + (b * n + i) * I + h * Dh;
        std::fill(o, o + Dh, 0.f);
        if (mx == -INFINITY) {  // no visible key: zero output, zero probabilities
          std::fill(p, p + S, 0.f);
          continue;
        }
        float sum = 0.f;
        for (int64_t j = 0; j < S; ++j) sum += (p[j] = bk[j] < 0 ? 0.f : std::exp(p[j] - mx));
        const float inv = 1.0f / sum;
        const float* dr = drop ? drop + ((b * H + h) * n + i) * S : nullptr;
        for (int64_t j = 0; j < S; ++j) {
          p[j] *= inv;
          float w = dr ? p[j] * dr[j] : p[j];
          if (w == 0.f) continue;
          const KVRows& sg = segs[idx.seg[size_t(j)]];
          const float* vj = sg.data + b * sg.batch_stride + idx.row[size_t(j)] * 2 * I + I + h * Dh;
          for (int64_t c = 0; c < Dh; ++c) o[c] += w * vj[c];
        }
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
      for (int64_t i = 0; i < n; ++i) {
        const float* doi = dout + (b * n + i) * I + h * Dh;
        const float* qi = q + (b * n + i) * I + h * Dh;
        const float* p = probs + ((b * H + h) * n + i) * S;
        const float* dr = drop ? drop + ((b * H + h) * n + i) * S : nullptr;
        float* dl = dlogits + ((b * H + h) * n + i) * S;
        // dP_j = dout . v_j (times the dropout multiplier); dV_j += P~_j dout
        float dot = 0.f;
        for (int64_t j = 0; j < S; ++j) {
          if (p[j] == 0.f) {
            dl[j] = 0.f;
            continue;
          }
          const KVRows& sg = segs[idx.seg[size_t(j)]];
          const int64_t off = b * sg.batch_stride + idx.row[size_t(j)] * 2 * I + I + h * Dh;
          const float* vj = sg.data + off;
          float m = dr ? dr[j] : 1.f;
          float s = 0.f;
#pragma omp simd reduction(+ : s)
          for (int64_t c = 0; c < Dh; ++c) s += doi[c] * vj[c];
          dl[j] = s * m;
          dot += p[j] * dl[j];
          if (sg.grad && m != 0.f) {
            float* dvj = sg.grad + off;
            const float w = p[j] * m;
            for (int64_t c = 0; c < Dh; ++c) dvj[c] += w * doi[c];
          }
        }
        // softmax backward, then dq += dl_j k_j, dk_j += dl_j q
        float* dqi = dq ? dq + (b * n + i) * I + h * Dh : nullptr;
        for (int64_t j = 0; j < S; ++j) {
          if (p[j] == 0.f) continue;
          dl[j] = p[j] * (dl[j] - dot);
          const KVRows& sg = segs[idx.seg[size_t(j)]];
          const int64_t off = b * sg.batch_stride + idx.row[size_t(j)] * 2 * I + h * Dh;
          if (dqi)
            for (int64_t c = 0; c < Dh; ++c) dqi[c] += dl[j] * sg.data[off + c];
          if (sg.grad)
            for (int64_t c = 0; c < Dh; ++c) sg.grad[off + c] += dl[j] * qi[c];
        }
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
      std::vector<uint8_t> empty_row(size_t(n), 0);
      for (int64_t i = 0; i < n; ++i) {  // bias, visibility, softmax
        float* p = probs + ((b * H + h) * n + i) * S;
        const int32_t* bk = bucket + i * S;
        float mx = -INFINITY;
        for (int64_t j = 0; j < S; ++j) {
          if (bk[j] < 0) continue;
          if (bias) p[j] += bias[bk[j] * H + h];
          mx = std::max(mx, p[j]);
        }
        if (mx == -INFINITY) {  // no visible key: zero probabilities, zero output
          std::fill(p, p + S, 0.f);
          empty_row[size_t(i)] = 1;
          continue;
        }
        float sum = 0.f;
        for (int64_t j = 0; j < S; ++j) sum += (p[j] = bk[j] < 0 ? 0.f : std::exp(p[j] - mx));
        const float inv = 1.0f / sum;
        for (int64_t j = 0; j < S; ++j) p[j] *= inv;
      }
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
  const int64_t B = d.B, n = d.n, H = d.H, S = d.S;
  // Head h owns column h of dbias: one thread per head, rows in a fixed order.
#pragma omp parallel for if (B * n * S * H > (1 << 15))
  for (int64_t h = 0; h < H; ++h)
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i = 0; i < n; ++i) {
        const float* dl = dlogits + ((b * H + h) * n + i) * S;
        for (int64_t j = 0; j < S; ++j)
          if (bucket[i * S + j] >= 0) dbias[bucket[i * S + j] * H + h] += dl[j];
      }
}

}  // namespace fbt::cpu
