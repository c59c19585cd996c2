// CPU kernels besides the products (backend/cpu/matmul.cpp) and attention (attention.cpp):
// elementwise ops, layer norm, GEGLU, embedding, the loss, the memory mix, dropout masks, the
// gradient's sums and AdamW. OpenMP loops over rows or elements; sums that cross rows run in a
// fixed order, so results are bit-identical for any thread count.
#include "backend/cpu/kernels.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include <omp.h>

#include "backend/rng.hpp"
#include "backend/cpu/parallel.hpp"
#include "backend/cpu/simd.hpp"

namespace fbt::cpu {

using namespace simd;

void add_forward(float* y, const float* a, const float* b, int64_t n) {
#pragma omp parallel for simd if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) y[i] = a[i] + b[i];
}

void mul_forward(float* y, const float* a, const float* b, int64_t n) {
#pragma omp parallel for simd if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) y[i] = a[i] * b[i];
}

void mul_backward(float* da, float* db, const float* dy, const float* a, const float* b, int64_t n) {
  if (da)
    for (int64_t i = 0; i < n; ++i) da[i] += dy[i] * b[i];
  if (db)
    for (int64_t i = 0; i < n; ++i) db[i] += dy[i] * a[i];
}

void scale_forward(float* y, const float* x, float s, int64_t n) {
#pragma omp parallel for simd if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] * s;
}

void axpy(float* y, float s, const float* x, int64_t n) {
#pragma omp parallel for simd if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) y[i] += s * x[i];
}

void add_rows(float* dst, int64_t dst_stride, const float* src, int64_t src_stride, int64_t rows, int64_t cols) {
  // Many short rows (a batch's slices of a concatenation) are split between the threads by rows.
#pragma omp parallel for if (rows > 1 && cols <= kParallelMin && rows * cols > 4 * kParallelMin)
  for (int64_t r = 0; r < rows; ++r) axpy(dst + r * dst_stride, 1.f, src + r * src_stride, cols);
}

void mask_rows_forward(float* y, const float* x, const uint8_t* keep, int64_t N, int64_t C) {
  for (int64_t r = 0; r < N; ++r)
    if (keep[r]) std::memcpy(y + r * C, x + r * C, sizeof(float) * size_t(C));
    else std::memset(y + r * C, 0, sizeof(float) * size_t(C));
}

void mask_rows_backward(float* dx, const float* dy, const uint8_t* keep, int64_t N, int64_t C) {
  for (int64_t r = 0; r < N; ++r)
    if (keep[r])
      for (int64_t c = 0; c < C; ++c) dx[r * C + c] += dy[r * C + c];
}

// ---- layer norm ----

void layernorm_forward(float* y, float* mean, float* rstd, const float* x, const float* w, const float* b,
                       int64_t N, int64_t C) {
#pragma omp parallel for if (N * C > kParallelMin)
  for (int64_t r = 0; r < N; ++r) {
    const float* xr = x + r * C;
    const float m = reduce(C, [&](int64_t c) { return vload(xr + c); }, [&](int64_t c) { return xr[c]; }) / float(C);
    const float v = reduce(
        C,
        [&](int64_t c) {
          const vf d = vsub(vload(xr + c), vset1(m));
          return vmul(d, d);
        },
        [&](int64_t c) { return (xr[c] - m) * (xr[c] - m); });
    float s = 1.0f / std::sqrt(v / float(C) + 1e-5f);
    float* yr = y + r * C;
    for (int64_t c = 0; c < C; ++c) yr[c] = (xr[c] - m) * s * w[c] + b[c];
    mean[r] = m;
    rstd[r] = s;
  }
}

void layernorm_backward_input(float* dx, const float* dy, const float* x, const float* w, const float* mean,
                              const float* rstd, int64_t N, int64_t C, bool accumulate) {
#pragma omp parallel for if (N * C > kParallelMin)
  for (int64_t r = 0; r < N; ++r) {
    const float *xr = x + r * C, *dyr = dy + r * C;
    const float m = mean[r], s = rstd[r];
    // means of dxhat = dy w and of dxhat * xhat
    const float sum_g =
        reduce(C, [&](int64_t c) { return vmul(vload(dyr + c), vload(w + c)); }, [&](int64_t c) { return dyr[c] * w[c]; }) /
        float(C);
    const float sum_gx = reduce(
                             C,
                             [&](int64_t c) {
                               const vf xhat = vmul(vsub(vload(xr + c), vset1(m)), vset1(s));
                               return vmul(vmul(vload(dyr + c), vload(w + c)), xhat);
                             },
                             [&](int64_t c) { return dyr[c] * w[c] * (xr[c] - m) * s; }) /
                         float(C);
    float* dxr = dx + r * C;
    for (int64_t c = 0; c < C; ++c) {
      const float xhat = (xr[c] - m) * s, g = s * (dyr[c] * w[c] - sum_g - xhat * sum_gx);
      dxr[c] = accumulate ? dxr[c] + g : g;
    }
  }
}

void layernorm_backward_params(float* dw, float* db, const float* dy, const float* x, const float* mean,
                               const float* rstd, int64_t N, int64_t C) {
  for (int64_t r = 0; r < N; ++r) {
    const float *xr = x + r * C, *dyr = dy + r * C;
    float m = mean[r], s = rstd[r];
    for (int64_t c = 0; c < C; ++c) {
      if (dw) dw[c] += dyr[c] * (xr[c] - m) * s;
      if (db) db[c] += dyr[c];
    }
  }
}

void layernorm_xhat(float* xhat, const float* x, const float* mean, const float* rstd, int64_t N, int64_t C) {
#pragma omp parallel for if (N * C > kParallelMin)
  for (int64_t r = 0; r < N; ++r)
    for (int64_t c = 0; c < C; ++c) xhat[r * C + c] = (x[r * C + c] - mean[r]) * rstd[r];
}

bool gather_cache_grads(float* g_diff, float* g_all, const float* gd, const float* gc, int64_t B, int64_t R, int64_t KV,
                        int64_t row, int64_t n) {
  const int64_t rows = n * KV;
  bool any_const = false;
#pragma omp parallel for reduction(|| : any_const) if (B * rows > (1 << 16))
  for (int64_t b = 0; b < B; ++b) {
    const int64_t src = (b * R + row) * KV, dst = b * rows;
    if (gd) std::memcpy(g_diff + dst, gd + src, sizeof(float) * size_t(rows));
    else std::memset(g_diff + dst, 0, sizeof(float) * size_t(rows));
    if (!gc) continue;
    bool nonzero = false;
    for (int64_t i = 0; i < rows; ++i) {
      g_all[dst + i] = g_diff[dst + i] + gc[src + i];
      nonzero |= gc[src + i] != 0.f;
    }
    any_const = any_const || nonzero;
  }
  return any_const;
}

void constant_rows_projection_backward(float* dw, float* db, const float* M, const float* colsum, const float* P,
                                       int64_t KV, int64_t D) {
  // Threads own column ranges; every sum runs over the rows in order (deterministic).
  split_threads(D, 64, KV * D > kParallelMin, [&](int64_t c0, int64_t c1) {
    for (int64_t o = 0; o < KV; ++o) {
      const float* Mo = M + o * D;
      const float* Po = P + o * D;
      if (dw)
        for (int64_t c = c0; c < c1; ++c) dw[c] += Po[c] * Mo[c];
      if (db)
        for (int64_t c = c0; c < c1; ++c) db[c] += Po[c] * colsum[o];
    }
  });
}

// ---- activations ----
// Exact GELU through simd::verf and simd::vexp (vectorized, the same bits at every width): the
// scalar libm calls would cost more than the products around them in a time step.

namespace {
constexpr float kSqrtHalf = float(M_SQRT1_2);
constexpr float kInvSqrt2Pi = float(0.5 * M_2_SQRTPI * M_SQRT1_2);
constexpr int64_t kActivationParallelMin = 1 << 12;  // erf per element: threads pay off sooner

// gelu(x) = x Phi(x) = 0.5 x (1 + erf(x / sqrt 2)); its derivative Phi(x) + x phi(x).
inline vf twice_cdf(vf x) { return vadd(vset1(1.f), verf(vmul(x, vset1(kSqrtHalf)))); }
// gelu'(x) given cdf2 = twice_cdf(x) (geglu's backward needs both).
inline vf gelu_grad_from_cdf(vf x, vf cdf2) {
  const vf density = vmul(vmul(x, vset1(kInvSqrt2Pi)), vexp(vmul(vset1(-0.5f), vmul(x, x))));
  return vadd(vmul(vset1(0.5f), cdf2), density);
}
}  // namespace

void geglu_forward(float* y, const float* u, int64_t N, int64_t F) {
#pragma omp parallel for if (N > 1 && N * F > kActivationParallelMin)
  for (int64_t r = 0; r < N; ++r) {
    const float *value = u + r * 2 * F, *gate = value + F;
    float* yr = y + r * F;
    each_vector(F, [&](const Lanes& l) {  // value * 0.5 gate (1 + erf(gate / sqrt 2))
      const vf g = l.load(gate);
      l.store(yr, vmul(vmul(vmul(vset1(0.5f), g), twice_cdf(g)), l.load(value)));
    });
  }
}

void geglu_backward(float* du, const float* dy, const float* u, int64_t N, int64_t F, bool accumulate) {
#pragma omp parallel for if (N > 1 && N * F > kActivationParallelMin)
  for (int64_t r = 0; r < N; ++r) {
    const float *value = u + r * 2 * F, *gate = value + F, *d = dy + r * F;
    float *dvalue = du + r * 2 * F, *dgate = dvalue + F;
    each_vector(F, [&](const Lanes& l) {  // d value = dy gelu(gate);  d gate = dy value gelu'(gate)
      const vf g = l.load(gate), dr = l.load(d), cdf2 = twice_cdf(g);
      vf dv = vmul(vmul(vmul(dr, vset1(0.5f)), g), cdf2);
      vf dg = vmul(vmul(dr, l.load(value)), gelu_grad_from_cdf(g, cdf2));
      if (accumulate) dv = vadd(l.load(dvalue), dv), dg = vadd(l.load(dgate), dg);
      l.store(dvalue, dv);
      l.store(dgate, dg);
    });
  }
}

// ---- softmax ----

// ---- embedding and loss ----

void embedding_forward(float* y, const float* W, const int32_t* ids, int64_t N, int64_t D) {
#pragma omp parallel for if (N * D > kParallelMin)
  for (int64_t r = 0; r < N; ++r) std::memcpy(y + r * D, W + int64_t(ids[r]) * D, sizeof(float) * size_t(D));
}

void embedding_backward(float* dW, const float* dy, const int32_t* rows, const int32_t* tokens, const int32_t* starts,
                        int64_t U, int64_t D) {
#pragma omp parallel for if (U * D > kParallelMin)
  for (int64_t u = 0; u < U; ++u) {  // a token's rows in row order; tokens apart
    float* dwr = dW + int64_t(tokens[u]) * D;
    for (int32_t k = starts[u]; k < starts[u + 1]; ++k) {
      const float* dyr = dy + int64_t(rows[k]) * D;
      for (int64_t c = 0; c < D; ++c) dwr[c] += dyr[c];
    }
  }
}

void cross_entropy_forward(float* loss, float* lse, const float* logits, const int32_t* targets, int64_t N, int64_t V,
                           int64_t counted) {
  std::vector<double> row_loss(size_t(N), 0.0);
#pragma omp parallel for if (N * V > kParallelMin)
  for (int64_t r = 0; r < N; ++r) {
    const float* lr = logits + r * V;
    float mx = lr[0];
    for (int64_t c = 1; c < V; ++c) mx = std::max(mx, lr[c]);
    double s = 0.0;
    for (int64_t c = 0; c < V; ++c) s += std::exp(double(lr[c] - mx));
    double l = double(mx) + std::log(s);
    lse[r] = float(l);
    if (targets[r] >= 0) row_loss[size_t(r)] = l - double(lr[targets[r]]);
  }
  double total = 0.0;
  for (int64_t r = 0; r < N; ++r)  // in row order, whatever the threads
    if (targets[r] >= 0) total += row_loss[size_t(r)];
  loss[0] = counted ? float(total / double(counted)) : 0.f;
}

void cross_entropy_backward(float* dlogits, const float* g_in, int64_t counted, const float* logits, const float* lse,
                            const int32_t* targets, int64_t N, int64_t V) {
  if (!counted) return;
  const float g = g_in[0] / float(counted);
#pragma omp parallel for if (N * V > kParallelMin)
  for (int64_t r = 0; r < N; ++r) {
    if (targets[r] < 0) continue;  // no target: no loss, no gradient
    const float* lr = logits + r * V;
    float* dr = dlogits + r * V;
    for (int64_t c = 0; c < V; ++c) dr[c] += g * std::exp(lr[c] - lse[r]);
    dr[targets[r]] -= g;
  }
}

// ---- memory mix ----

void weighted_sum_forward(float* y, float* a, const float* w, const float* const* xs, int64_t K, int64_t n) {
  float mx = w[0];
  for (int64_t k = 1; k < K; ++k) mx = std::max(mx, w[k]);
  float sum = 0.f;
  for (int64_t k = 0; k < K; ++k) sum += (a[k] = std::exp(w[k] - mx));
  for (int64_t k = 0; k < K; ++k) a[k] /= sum;
#pragma omp parallel for if (n * K > kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    float acc = 0.f;
    for (int64_t k = 0; k < K; ++k) acc += a[k] * xs[k][i];
    y[i] = acc;
  }
}

void weighted_sum_backward(float* const* dxs, float* dw, const float* dy, const float* a, const float* const* xs,
                           int64_t K, int64_t n) {
  for (int64_t k = 0; k < K; ++k)
    if (dxs[k]) axpy(dxs[k], a[k], dy, n);
  if (!dw) return;
  // da_k = <dy, x_k>; dw = a * (da - <a, da>)
  double da[64];
  double* dap = K <= 64 ? da : new double[size_t(K)];
  double dot = 0.0;
  for (int64_t k = 0; k < K; ++k) {
    dap[k] = dot_double(dy, xs[k], n);
    dot += double(a[k]) * dap[k];
  }
  for (int64_t k = 0; k < K; ++k) dw[k] += float(double(a[k]) * (dap[k] - dot));
  if (dap != da) delete[] dap;
}

void dropout_mask(float* mask, float p, uint64_t seed, uint64_t counter, int64_t n) {
  const float keep = 1.0f / (1.0f - p);
#pragma omp parallel for if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) mask[i] = Rng::uniform_at(seed, counter + uint64_t(i)) < p ? 0.f : keep;
}

double dot_double(const float* a, const float* b, int64_t n) {
  // Fixed chunks summed in order, each in kLanesD interleaved double sums (lane l takes elements
  // l, l + kLanesD, ...; vectorized, where one running sum would wait on every addition): the
  // same result for any thread count.
  constexpr int64_t kChunkSize = 1 << 16, kLanesD = 16;
  const int64_t chunks = (n + kChunkSize - 1) / kChunkSize;
  std::vector<double> part(size_t(chunks), 0.0);
#pragma omp parallel for if (chunks > 1)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t begin = c * kChunkSize, end = std::min(n, begin + kChunkSize);
    double lane[kLanesD] = {};
    int64_t i = begin;
    for (; i + kLanesD <= end; i += kLanesD)
#pragma omp simd
      for (int64_t l = 0; l < kLanesD; ++l) lane[l] += double(a[i + l]) * double(b[i + l]);
    double s = 0.0;
    for (; i < end; ++i) s += double(a[i]) * double(b[i]);
    for (double v : lane) s += v;
    part[size_t(c)] = s;
  }
  double s = 0.0;
  for (double p : part) s += p;
  return s;
}

double sum_squares(const float* x, int64_t n) { return dot_double(x, x, n); }

// ---- the optimizer ----

void adamw_step(float* w, float* m, float* v, const float* g, const uint8_t* decay, int64_t n, double lr, double beta1,
                double beta2, double eps, double weight_decay, int64_t t, float grad_scale) {
  const double bc1 = 1.0 - std::pow(beta1, double(t)), bc2 = 1.0 - std::pow(beta2, double(t));
  const float b1 = float(beta1), b2 = float(beta2), e = float(eps);
  const float step_size = float(lr / bc1), inv_sqrt_bc2 = float(1.0 / std::sqrt(bc2));
  const float decay_step = float(lr * weight_decay);
#pragma omp parallel for simd schedule(static) if (n > (1 << 16))
  for (int64_t i = 0; i < n; ++i) {
    const float gi = g[i] * grad_scale;
    if (decay[i]) w[i] -= decay_step * w[i];  // decoupled: p <- p - lr * wd * p
    m[i] = b1 * m[i] + (1.f - b1) * gi;
    v[i] = b2 * v[i] + (1.f - b2) * gi * gi;
    w[i] -= step_size * m[i] / (std::sqrt(v[i]) * inv_sqrt_bc2 + e);
  }
}

}  // namespace fbt::cpu
