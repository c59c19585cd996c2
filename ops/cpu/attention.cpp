// Attention of a window of n queries over S key/value rows gathered from several segments
// (memory rows of a cache, the window's own rows), with an additive per-head bucket bias and
// a visibility table. One (batch, head) pair per work item; heads own disjoint columns, so the
// key/value gradients need no atomics. The bias gradient is reduced serially afterwards.
#include <algorithm>
#include <cmath>
#include <vector>

#include "ops/cpu/kernels.hpp"

namespace fbt::cpu {

namespace {
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
}  // namespace

void attention_forward(float* out, float* probs, const float* q, const KVRows* segs, int nsegs,
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

void attention_backward(float* dq, float* dbias, float* dlogits, const float* dout, const float* q,
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
  if (!dbias) return;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < n; ++i) {
        const float* dl = dlogits + ((b * H + h) * n + i) * S;
        for (int64_t j = 0; j < S; ++j)
          if (bucket[i * S + j] >= 0) dbias[bucket[i * S + j] * H + h] += dl[j];
      }
}

}  // namespace fbt::cpu
