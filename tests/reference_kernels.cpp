// Naive reference loops in double precision: slow, obvious, and the yardstick the fast kernels
// are tested against (tests/test_kernels.cpp).
#include <algorithm>
#include <cmath>
#include <vector>

#include "tests/reference_kernels.hpp"

namespace fbt::ref {

namespace {
// Head h's key in every row of the segments' concatenation for batch row b (its value I floats
// further), and its key gradient (null where a segment takes none).
void head_rows(const fbt::KVRows* segs, int nsegs, int64_t b, int64_t h, const fbt::AttentionDims& d,
               std::vector<const float*>& key, std::vector<float*>& grad) {
  const int64_t I = d.H * d.Dh;
  for (int k = 0; k < nsegs; ++k)
    for (int64_t r = 0; r < segs[k].rows; ++r) {
      const int64_t off = b * segs[k].batch_stride + r * 2 * I + h * d.Dh;
      key.push_back(segs[k].data + off);
      grad.push_back(segs[k].grad ? segs[k].grad + off : nullptr);
    }
}
}  // namespace

void linear_forward(float* y, const float* x, const float* W, const float* b, int64_t N, int64_t In, int64_t Out) {
  for (int64_t r = 0; r < N; ++r)
    for (int64_t o = 0; o < Out; ++o) {
      double s = b ? b[o] : 0.0;
      for (int64_t i = 0; i < In; ++i) s += double(x[r * In + i]) * W[o * In + i];
      y[r * Out + o] = float(s);
    }
}

void layernorm_forward(float* y, const float* x, const float* w, const float* b, int64_t N, int64_t C) {
  for (int64_t r = 0; r < N; ++r) {
    double m = 0.0, v = 0.0;
    for (int64_t c = 0; c < C; ++c) m += x[r * C + c];
    m /= double(C);
    for (int64_t c = 0; c < C; ++c) v += (x[r * C + c] - m) * (x[r * C + c] - m);
    v /= double(C);
    for (int64_t c = 0; c < C; ++c) y[r * C + c] = float((x[r * C + c] - m) / std::sqrt(v + 1e-5) * w[c] + b[c]);
  }
}

double cross_entropy_forward(const float* logits, const int32_t* targets, int64_t N, int64_t V) {
  double total = 0.0;
  for (int64_t r = 0; r < N; ++r) {
    double s = 0.0;
    for (int64_t c = 0; c < V; ++c) s += std::exp(double(logits[r * V + c]));
    total += std::log(s) - logits[r * V + targets[r]];
  }
  return total;
}

void attention_forward(float* out, const float* q, const fbt::KVRows* segs, int nsegs, const int32_t* bucket,
                       const float* bias, const fbt::AttentionDims& d) {
  const int64_t I = d.H * d.Dh;
  for (int64_t b = 0; b < d.B; ++b)
    for (int64_t h = 0; h < d.H; ++h)
      for (int64_t i = 0; i < d.n; ++i) {
        std::vector<double> logit, vrow;
        std::vector<const float*> vals;
        int64_t j = 0;
        for (int k = 0; k < nsegs; ++k)
          for (int64_t r = 0; r < segs[k].rows; ++r, ++j) {
            int32_t bk = bucket[i * d.S + j];
            if (bk < 0) continue;
            const float* row = segs[k].data + b * segs[k].batch_stride + r * 2 * I;
            double s = bias ? bias[bk * d.H + h] : 0.0;
            for (int64_t c = 0; c < d.Dh; ++c) s += double(q[(b * d.n + i) * I + h * d.Dh + c]) * row[h * d.Dh + c];
            logit.push_back(s);
            vals.push_back(row + I + h * d.Dh);
          }
        double mx = -INFINITY, sum = 0.0;
        for (double l : logit) mx = std::max(mx, l);
        for (double l : logit) sum += std::exp(l - mx);
        for (int64_t c = 0; c < d.Dh; ++c) {
          double o = 0.0;
          for (size_t t = 0; t < logit.size(); ++t) o += std::exp(logit[t] - mx) / sum * vals[t][c];
          out[(b * d.n + i) * I + h * d.Dh + c] = float(o);
        }
      }
}

void attention_backward(float* dq, float* dbias, const float* dout, const float* q, const fbt::KVRows* segs,
                        int nsegs, const int32_t* bucket, const float* probs, const float* drop,
                        const fbt::AttentionDims& d) {
  const int64_t I = d.H * d.Dh;
  for (int64_t b = 0; b < d.B; ++b)
    for (int64_t h = 0; h < d.H; ++h)
      for (int64_t i = 0; i < d.n; ++i) {
        const float* doi = dout + (b * d.n + i) * I + h * d.Dh;
        const float* qi = q + (b * d.n + i) * I + h * d.Dh;
        // probs and drop are key-major: query i's entry for key j at at + j * n.
        const int64_t at = (b * d.H + h) * d.S * d.n + i, stride = d.n;
        // Row j's key (its value follows I further) and key gradient, for every global j.
        std::vector<const float*> key;
        std::vector<float*> key_grad;
        head_rows(segs, nsegs, b, h, d, key, key_grad);
        std::vector<double> dp(size_t(d.S), 0.0);
        double dot = 0.0;
        for (int64_t j = 0; j < d.S; ++j) {
          const double m = drop ? drop[at + j * stride] : 1.0;
          for (int64_t c = 0; c < d.Dh; ++c) dp[size_t(j)] += double(doi[c]) * key[size_t(j)][I + c];
          dp[size_t(j)] *= m;
          dot += probs[at + j * stride] * dp[size_t(j)];
          if (key_grad[size_t(j)])
            for (int64_t c = 0; c < d.Dh; ++c) key_grad[size_t(j)][I + c] += float(probs[at + j * stride] * m * doi[c]);
        }
        for (int64_t j = 0; j < d.S; ++j) {
          const double dl = probs[at + j * stride] * (dp[size_t(j)] - dot);
          for (int64_t c = 0; c < d.Dh; ++c) {
            if (dq) dq[(b * d.n + i) * I + h * d.Dh + c] += float(dl * key[size_t(j)][c]);
            if (key_grad[size_t(j)]) key_grad[size_t(j)][c] += float(dl * qi[c]);
          }
          if (dbias && bucket[i * d.S + j] >= 0) dbias[bucket[i * d.S + j] * d.H + h] += float(dl);
        }
      }
}

void attention_span(float* out, float* dq, float* dbias, float* dz, const float* dout, const float* q,
                    const fbt::KVRows* segs, int nsegs, const int32_t* bucket, const float* bias, const float* drop,
                    const fbt::AttentionDims& d, const float* z, const int32_t* distance, int64_t mem_len,
                    int64_t ramp) {
  const int64_t I = d.H * d.Dh, S = d.S;
  for (int64_t b = 0; b < d.B; ++b)
    for (int64_t h = 0; h < d.H; ++h)
      for (int64_t i = 0; i < d.n; ++i) {
        const float* qi = q + (b * d.n + i) * I + h * d.Dh;
        const float* doi = dout + (b * d.n + i) * I + h * d.Dh;
        float* oi = out + (b * d.n + i) * I + h * d.Dh;
        std::vector<const float*> key;
        std::vector<float*> grad;
        head_rows(segs, nsegs, b, h, d, key, grad);
        std::vector<size_t> seen;  // the visible keys
        for (int64_t j = 0; j < S; ++j)
          if (bucket[i * S + j] >= 0) seen.push_back(size_t(j));
        for (int64_t c = 0; c < d.Dh; ++c) oi[c] = 0.f;
        if (seen.empty()) continue;
        const size_t V = seen.size();
        std::vector<double> logit(V), a(V), m(V), x(V), ap(V), w(V), g(V);
        double mx = -INFINITY, sum = 0, masked = 0;
        for (size_t t = 0; t < V; ++t) {
          const size_t j = seen[t];
          double s = bias ? bias[bucket[int64_t(i) * S + int64_t(j)] * d.H + h] : 0.0;
          for (int64_t c = 0; c < d.Dh; ++c) s += double(qi[c]) * key[j][c];
          logit[t] = s, mx = std::max(mx, s);
        }
        for (size_t t = 0; t < V; ++t) sum += std::exp(logit[t] - mx);
        for (size_t t = 0; t < V; ++t) {
          const int64_t dist = distance[i * S + int64_t(seen[t])];
          a[t] = std::exp(logit[t] - mx) / sum;
          x[t] = (double(z[h]) * double(mem_len) - double(dist - 1)) / double(ramp) + 1.0;
          m[t] = std::clamp(x[t], 0.0, 1.0);
          masked += a[t] * m[t];
        }
        const double den = masked + 1e-8;
        for (size_t t = 0; t < V; ++t) {
          const size_t j = seen[t];
          const double keep = drop ? drop[((b * d.H + h) * S + int64_t(j)) * d.n + i] : 1.0;
          ap[t] = a[t] * m[t] / den, w[t] = ap[t] * keep;
          for (int64_t c = 0; c < d.Dh; ++c) oi[c] += float(w[t] * key[j][I + c]);
          double gv = 0;  // d/d(weight) = dout . v, through the dropout multiplier to the masked weight
          for (int64_t c = 0; c < d.Dh; ++c) gv += double(doi[c]) * key[j][I + c];
          g[t] = gv * keep;
          if (grad[j])
            for (int64_t c = 0; c < d.Dh; ++c) grad[j][I + c] += float(w[t] * doi[c]);
        }
        // a'_t = a_t m_t / den: d/da_t and d/dm_t, then the softmax's backward
        double gap = 0;  // sum_u g_u a'_u
        for (size_t t = 0; t < V; ++t) gap += g[t] * ap[t];
        std::vector<double> da(V), dm(V);
        double ada = 0;
        for (size_t t = 0; t < V; ++t) {
          da[t] = m[t] * (g[t] - gap) / den;
          dm[t] = a[t] * (g[t] - gap) / den;
          ada += a[t] * da[t];
        }
        for (size_t t = 0; t < V; ++t) {
          const size_t j = seen[t];
          const double dl = a[t] * (da[t] - ada);
          if (x[t] >= 0.0 && x[t] <= 1.0) dz[h] += float(dm[t] * double(mem_len) / double(ramp));
          for (int64_t c = 0; c < d.Dh; ++c) {
            if (dq) dq[(b * d.n + i) * I + h * d.Dh + c] += float(dl * key[j][c]);
            if (grad[j]) grad[j][c] += float(dl * qi[c]);
          }
          if (dbias) dbias[bucket[int64_t(i) * S + int64_t(j)] * d.H + h] += float(dl);
        }
      }
}

}  // namespace fbt::ref
