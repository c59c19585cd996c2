// CUDA kernels mirroring backend/cpu/kernels.cpp and matmul.cpp (see kernels.hpp; attention:
// attention.cu). Plain, correct first: one thread per row or per column where a reduction is
// needed (a fixed order, no atomics), cuBLAS for the matrix products.
#include "backend/rng.hpp"
#include "backend/cuda/common.cuh"

namespace fbt::cuda {

using namespace detail;

// ---- elementwise ----

namespace {
__global__ void dropout_mask_k(float* mask, float p, float keep, uint64_t seed, uint64_t counter, int64_t n) {
  int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i < n) mask[i] = Rng::uniform_at(seed, counter + uint64_t(i)) < p ? 0.f : keep;
}
__global__ void add_k(float* y, const float* a, const float* b, int64_t n) {
  int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i < n) y[i] = a[i] + b[i];
}
__global__ void mul_k(float* y, const float* a, const float* b, int64_t n) {
  int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i < n) y[i] = a[i] * b[i];
}
__global__ void mul_backward_k(float* da, float* db, const float* dy, const float* a, const float* b, int64_t n) {
  int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  if (da) da[i] += dy[i] * b[i];
  if (db) db[i] += dy[i] * a[i];
}
__global__ void scale_k(float* y, const float* x, float s, int64_t n) {
  int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i < n) y[i] = s * x[i];
}
__global__ void axpy_k(float* y, float s, const float* x, int64_t n) {
  int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i < n) y[i] += s * x[i];
}
__global__ void add_rows_k(float* dst, int64_t dst_stride, const float* src, int64_t src_stride, int64_t rows,
                           int64_t cols) {
  int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i >= rows * cols) return;
  const int64_t r = i / cols, c = i % cols;
  dst[r * dst_stride + c] += src[r * src_stride + c];
}
__global__ void gather_k(float* dst, const float* const* parts, const int64_t* offsets, int64_t nparts, int64_t total) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    int64_t lo = 0, hi = nparts - 1;  // the part holding e: offsets[lo] <= e < offsets[lo + 1]
    while (lo < hi) {
      const int64_t mid = (lo + hi + 1) / 2;
      if (offsets[mid] <= e) lo = mid;
      else hi = mid - 1;
    }
    dst[e] = parts[lo][e - offsets[lo]];
  }
}
__global__ void mask_rows_k(float* y, const float* x, const uint8_t* keep, int64_t N, int64_t C, bool accumulate) {
  int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i >= N * C) return;
  const float v = keep[i / C] ? x[i] : 0.f;
  if (accumulate) y[i] += v;
  else y[i] = v;
}
}  // namespace

void dropout_mask(float* mask, float p, uint64_t seed, uint64_t counter, int64_t n) {
  launch(dropout_mask_k, blocks(n), kThreads, 0, mask, p, 1.0f / (1.0f - p), seed, counter, n);
}
void add_forward(float* y, const float* a, const float* b, int64_t n) {
  launch(add_k, blocks(n), kThreads, 0, y, a, b, n);
}
void mul_forward(float* y, const float* a, const float* b, int64_t n) {
  launch(mul_k, blocks(n), kThreads, 0, y, a, b, n);
}
void mul_backward(float* da, float* db, const float* dy, const float* a, const float* b, int64_t n) {
  launch(mul_backward_k, blocks(n), kThreads, 0, da, db, dy, a, b, n);
}
void scale_forward(float* y, const float* x, float s, int64_t n) {
  launch(scale_k, blocks(n), kThreads, 0, y, x, s, n);
}
void axpy(float* y, float s, const float* x, int64_t n) {
  launch(axpy_k, blocks(n), kThreads, 0, y, s, x, n);
}
void add_rows(float* dst, int64_t dst_stride, const float* src, int64_t src_stride, int64_t rows, int64_t cols) {
  launch(add_rows_k, blocks(rows * cols), kThreads, 0, dst, dst_stride, src, src_stride, rows, cols);
}
void gather(float* dst, const float* const* parts, const int64_t* offsets, int64_t nparts, int64_t total) {
  if (total == 0) return;
  launch(gather_k, int(std::min<int64_t>(blocks(total), 4096)), kThreads, 0, dst, parts, offsets, nparts, total);
}
void mask_rows_forward(float* y, const float* x, const uint8_t* keep, int64_t N, int64_t C) {
  launch(mask_rows_k, blocks(N * C), kThreads, 0, y, x, keep, N, C, false);
}
void mask_rows_backward(float* dx, const float* dy, const uint8_t* keep, int64_t N, int64_t C) {
  launch(mask_rows_k, blocks(N * C), kThreads, 0, dx, dy, keep, N, C, true);
}
void synchronize() { CUDA_CHECK(cudaDeviceSynchronize()); }

// ---- linear (row-major via cuBLAS's column-major view: a row-major (r x c) is a col-major (c x r)) ----

namespace {
__global__ void add_bias_k(float* y, const float* b, int64_t N, int64_t Out) {
  int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i < N * Out) y[i] += b[i % Out];
}
__global__ void bias_backward_k(float* db, const float* dy, int64_t N, int64_t Out) {
  int64_t o = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (o >= Out) return;
  float s = 0.f;
  for (int64_t r = 0; r < N; ++r) s += dy[r * Out + o];
  db[o] += s;
}
}  // namespace

void linear_forward(float* y, const float* x, const float* W, const float* b, int64_t N, int64_t In, int64_t Out) {
  // y^T (Out x N, col-major) = W (Out x In, i.e. W^T col-major In x Out transposed) * x^T
  sgemm(CUBLAS_OP_T, CUBLAS_OP_N, Out, N, In, W, In, x, In, 0.f, y, Out);
  if (b) launch(add_bias_k, blocks(N * Out), kThreads, 0, y, b, N, Out);
}

void linear_backward(float* dx, float* dW, float* db, const float* dy, const float* x, const float* W, int64_t N,
                     int64_t In, int64_t Out) {
  if (dx)  // dx (N x In) += dy (N x Out) W (Out x In): col-major dx^T = W^T dy^T
    sgemm(CUBLAS_OP_N, CUBLAS_OP_N, In, N, Out, W, In, dy, Out, 1.f, dx, In);
  if (dW)  // dW (Out x In) += dy^T x: col-major dW^T (In x Out) = x^T dy
    sgemm(CUBLAS_OP_N, CUBLAS_OP_T, In, Out, N, x, In, dy, Out, 1.f, dW, In);
  if (db) launch(bias_backward_k, blocks(Out), kThreads, 0, db, dy, N, Out);
}

// ---- layer norm: a warp per row ----

namespace {
__global__ void layernorm_forward_k(float* y, float* mean, float* rstd, const float* x, const float* w, const float* b,
                                    int64_t N, int64_t C) {
  int64_t r = blockIdx.x * int64_t(blockDim.x / 32) + threadIdx.x / 32;
  int lane = threadIdx.x % 32;
  if (r >= N) return;
  const float* xr = x + r * C;
  float s = 0.f;
  for (int64_t c = lane; c < C; c += 32) s += xr[c];
  const float m = warp_sum(s) / float(C);
  float v = 0.f;
  for (int64_t c = lane; c < C; c += 32) v += (xr[c] - m) * (xr[c] - m);
  const float rs = rsqrtf(warp_sum(v) / float(C) + 1e-5f);
  for (int64_t c = lane; c < C; c += 32) y[r * C + c] = (xr[c] - m) * rs * w[c] + b[c];
  if (lane == 0) mean[r] = m, rstd[r] = rs;
}

__global__ void layernorm_backward_input_k(float* dx, const float* dy, const float* x, const float* w,
                                           const float* mean, const float* rstd, int64_t N, int64_t C,
                                           bool accumulate) {
  int64_t r = blockIdx.x * int64_t(blockDim.x / 32) + threadIdx.x / 32;
  int lane = threadIdx.x % 32;
  if (r >= N) return;
  const float m = mean[r], s = rstd[r];
  float sg = 0.f, sgx = 0.f;
  for (int64_t c = lane; c < C; c += 32) {
    const float g = dy[r * C + c] * w[c];
    sg += g;
    sgx += g * (x[r * C + c] - m) * s;
  }
  sg = warp_sum(sg) / float(C);
  sgx = warp_sum(sgx) / float(C);
  for (int64_t c = lane; c < C; c += 32) {
    const float xhat = (x[r * C + c] - m) * s;
    const float v = s * (dy[r * C + c] * w[c] - sg - xhat * sgx);
    dx[r * C + c] = accumulate ? dx[r * C + c] + v : v;
  }
}

__global__ void layernorm_backward_params_k(float* dw, float* db, const float* dy, const float* x, const float* mean,
                                            const float* rstd, int64_t N, int64_t C) {
  int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (c >= C) return;
  float sw = 0.f, sb = 0.f;
  for (int64_t r = 0; r < N; ++r) {
    sw += dy[r * C + c] * (x[r * C + c] - mean[r]) * rstd[r];
    sb += dy[r * C + c];
  }
  if (dw) dw[c] += sw;
  if (db) db[c] += sb;
}
}  // namespace

void layernorm_forward(float* y, float* mean, float* rstd, const float* x, const float* w, const float* b, int64_t N,
                       int64_t C) {
  launch(layernorm_forward_k, int((N + 7) / 8), 256, 0, y, mean, rstd, x, w, b, N, C);
}
void layernorm_backward_input(float* dx, const float* dy, const float* x, const float* w, const float* mean,
                              const float* rstd, int64_t N, int64_t C, bool accumulate) {
  launch(layernorm_backward_input_k, int((N + 7) / 8), 256, 0, dx, dy, x, w, mean, rstd, N, C, accumulate);
}
void layernorm_backward_params(float* dw, float* db, const float* dy, const float* x, const float* mean,
                               const float* rstd, int64_t N, int64_t C) {
  launch(layernorm_backward_params_k, blocks(C), kThreads, 0, dw, db, dy, x, mean, rstd, N, C);
}

// ---- activations ----

namespace {
__global__ void geglu_forward_k(float* y, const float* u, int64_t N, int64_t F) {
  int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i >= N * F) return;
  const int64_t r = i / F, c = i % F;
  y[i] = u[r * 2 * F + c] * gelu_f(u[r * 2 * F + F + c]);
}
__global__ void geglu_backward_k(float* du, const float* dy, const float* u, int64_t N, int64_t F, bool accumulate) {
  int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i >= N * F) return;
  const int64_t r = i / F, c = i % F;
  const float val = u[r * 2 * F + c], gate = u[r * 2 * F + F + c];
  const float dval = dy[i] * gelu_f(gate), dgate = dy[i] * val * gelu_grad_f(gate);
  float *pv = du + r * 2 * F + c, *pg = pv + F;
  *pv = accumulate ? *pv + dval : dval;
  *pg = accumulate ? *pg + dgate : dgate;
}
}  // namespace

void geglu_forward(float* y, const float* u, int64_t N, int64_t F) {
  launch(geglu_forward_k, blocks(N * F), kThreads, 0, y, u, N, F);
}
void geglu_backward(float* du, const float* dy, const float* u, int64_t N, int64_t F, bool accumulate) {
  launch(geglu_backward_k, blocks(N * F), kThreads, 0, du, dy, u, N, F, accumulate);
}

// ---- embedding and loss ----

namespace {
__global__ void embedding_forward_k(float* y, const float* W, const int32_t* ids, int64_t N, int64_t D) {
  int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i < N * D) y[i] = W[int64_t(ids[i / D]) * D + i % D];
}
// One block per distinct token: its threads take columns and sum the token's rows in row order.
__global__ void embedding_backward_k(float* dW, const float* dy, const int32_t* rows, const int32_t* tokens,
                                     const int32_t* starts, int64_t D) {
  const int64_t u = blockIdx.x;
  float* dwr = dW + int64_t(tokens[u]) * D;
  for (int64_t c = threadIdx.x; c < D; c += blockDim.x) {
    float s = 0.f;
    for (int32_t k = starts[u]; k < starts[u + 1]; ++k) s += dy[int64_t(rows[k]) * D + c];
    dwr[c] += s;
  }
}
// One block per row: max and sum of exponentials in fixed trees.
constexpr int kRowThreads = 256;
__global__ void cross_entropy_forward_k(float* lse, float* loss, const float* logits, const int32_t* targets, int64_t N,
                                        int64_t V) {
  __shared__ float red[kRowThreads];
  const int64_t r = blockIdx.x;
  const float* lr = logits + r * V;
  float mx = -INFINITY;
  for (int64_t c = threadIdx.x; c < V; c += blockDim.x) mx = fmaxf(mx, lr[c]);
  mx = block_reduce(mx, red, true);
  float s = 0.f;
  for (int64_t c = threadIdx.x; c < V; c += blockDim.x) s += expf(lr[c] - mx);
  s = block_reduce(s, red, false);
  if (threadIdx.x == 0) {
    const float l = mx + logf(s);
    lse[r] = l;
    loss[r] = targets[r] >= 0 ? l - lr[targets[r]] : 0.f;
  }
}
// loss[0] = the sum of the N row losses over `counted`, summed in a fixed tree by one block.
__global__ void mean_k(float* loss, const float* rows, int64_t N, int64_t counted) {
  __shared__ float red[kRowThreads];
  float s = 0.f;
  for (int64_t r = threadIdx.x; r < N; r += blockDim.x) s += rows[r];
  s = block_reduce(s, red, false);
  if (threadIdx.x == 0) loss[0] = counted ? s / float(counted) : 0.f;
}
__global__ void cross_entropy_backward_k(float* dlogits, const float* g, int64_t counted, const float* logits,
                                         const float* lse, const int32_t* targets, int64_t N, int64_t V) {
  int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i >= N * V) return;
  const int64_t r = i / V, c = i % V;
  if (targets[r] < 0) return;  // no target: no gradient
  dlogits[i] += g[0] / float(counted) * (expf(logits[i] - lse[r]) - (c == targets[r] ? 1.f : 0.f));
}
}  // namespace

void embedding_forward(float* y, const float* W, const int32_t* ids, int64_t N, int64_t D) {
  launch(embedding_forward_k, blocks(N * D), kThreads, 0, y, W, ids, N, D);
}
void embedding_backward(float* dW, const float* dy, const int32_t* rows, const int32_t* tokens, const int32_t* starts,
                        int64_t U, int64_t D) {
  if (U == 0) return;
  launch(embedding_backward_k, int(U), 128, 0, dW, dy, rows, tokens, starts, D);
}
void cross_entropy_forward(float* loss, float* lse, const float* logits, const int32_t* targets, int64_t N, int64_t V,
                           int64_t counted) {
  float* rows = scratch(size_t(N));
  launch(cross_entropy_forward_k, int(N), kRowThreads, 0, lse, rows, logits, targets, N, V);
  launch(mean_k, 1, kRowThreads, 0, loss, rows, N, counted);
}
void cross_entropy_backward(float* dlogits, const float* g, int64_t counted, const float* logits, const float* lse,
                            const int32_t* targets, int64_t N, int64_t V) {
  if (!counted) return;  // no row has a target
  launch(cross_entropy_backward_k, blocks(N * V), kThreads, 0, dlogits, g, counted, logits, lse, targets, N, V);
}

// ---- memory mix ----

namespace {
__global__ void softmax_small_k(float* a, const float* w, int64_t K) {
  if (threadIdx.x != 0 || blockIdx.x != 0) return;
  float mx = w[0];
  for (int64_t k = 1; k < K; ++k) mx = fmaxf(mx, w[k]);
  float s = 0.f;
  for (int64_t k = 0; k < K; ++k) s += (a[k] = expf(w[k] - mx));
  for (int64_t k = 0; k < K; ++k) a[k] /= s;
}
__global__ void weighted_sum_forward_k(float* y, const float* a, const float* const* xs, int64_t K, int64_t n) {
  int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  float acc = 0.f;
  for (int64_t k = 0; k < K; ++k) acc += a[k] * xs[k][i];
  y[i] = acc;
}
__global__ void weighted_sum_dx_k(float* const* dxs, const float* dy, const float* a, int64_t K, int64_t n) {
  int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  for (int64_t k = 0; k < K; ++k)
    if (dxs[k]) dxs[k][i] += a[k] * dy[i];
}
// One block per k: <dy, x_k> reduced in a fixed tree order; then the softmax backward.
__global__ void weighted_sum_dots_k(double* da, const float* dy, const float* const* xs, int64_t n) {
  double s = 0.0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) s += double(dy[i]) * double(xs[blockIdx.x][i]);
  s = block_sum(s);
  if (threadIdx.x == 0) da[blockIdx.x] = s;
}
__global__ void weighted_sum_dw_k(float* dw, const double* da, const float* a, int64_t K) {
  if (threadIdx.x != 0 || blockIdx.x != 0) return;
  double dot = 0.0;
  for (int64_t k = 0; k < K; ++k) dot += double(a[k]) * da[k];
  for (int64_t k = 0; k < K; ++k) dw[k] += float(double(a[k]) * (da[k] - dot));
}
}  // namespace

void weighted_sum_forward(float* y, float* a, const float* w, const float* const* xs, int64_t K, int64_t n) {
  launch(softmax_small_k, 1, 1, 0, a, w, K);
  launch(weighted_sum_forward_k, blocks(n), kThreads, 0, y, a, xs, K, n);
}
void weighted_sum_backward(float* const* dxs, float* dw, const float* dy, const float* a, const float* const* xs,
                           int64_t K, int64_t n) {
  launch(weighted_sum_dx_k, blocks(n), kThreads, 0, dxs, dy, a, K, n);
  if (dw) {
    double* da = reinterpret_cast<double*>(scratch(size_t(2 * K)));
    launch(weighted_sum_dots_k, int(K), kThreads, 0, da, dy, xs, n);
    launch(weighted_sum_dw_k, 1, 1, 0, dw, da, a, K);
  }
}

// ---- optimizer and norm ----

namespace {
__global__ void adamw_k(float* w, float* m, float* v, const float* g, const uint8_t* decay, int64_t n, float decay_step,
                        float b1, float b2, float eps, float step_size, float inv_sqrt_bc2, float grad_scale) {
  int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  const float gi = g[i] * grad_scale;
  if (decay[i]) w[i] -= decay_step * w[i];
  m[i] = b1 * m[i] + (1.f - b1) * gi;
  v[i] = b2 * v[i] + (1.f - b2) * gi * gi;
  w[i] -= step_size * m[i] / (sqrtf(v[i]) * inv_sqrt_bc2 + eps);
}
__global__ void sum_squares_k(double* part, const float* x, int64_t n) {
  double acc = 0.0;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    acc += double(x[i]) * double(x[i]);
  acc = block_sum(acc);
  if (threadIdx.x == 0) part[blockIdx.x] = acc;
}
}  // namespace

void adamw_step(float* w, float* m, float* v, const float* g, const uint8_t* decay, int64_t n, double lr, double beta1,
                double beta2, double eps, double weight_decay, int64_t t, float grad_scale) {
  // The scalars rounded as train/optimizer.cpp rounds them, so both devices take the same step.
  const double bc1 = 1.0 - std::pow(beta1, double(t)), bc2 = 1.0 - std::pow(beta2, double(t));
  launch(adamw_k, blocks(n), kThreads, 0, w, m, v, g, decay, n, float(lr * weight_decay), float(beta1), float(beta2),
         float(eps), float(lr / bc1), float(1.0 / std::sqrt(bc2)), grad_scale);
}

double sum_squares(const float* x, int64_t n) {
  const int nb = 64;  // a fixed grid: the same partial sums in the same order every time
  double* part = reinterpret_cast<double*>(scratch(2 * nb));
  launch(sum_squares_k, nb, kThreads, 0, part, x, n);
  double h[nb];
  CUDA_CHECK(cudaMemcpy(h, part, sizeof(h), cudaMemcpyDeviceToHost));
  double s = 0.0;
  for (double v : h) s += v;
  return s;
}

namespace {
__global__ void sum_blocks_k(float* out, const float* parts, int64_t count, int64_t n) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  float s = parts[i];
  for (int64_t b = 1; b < count; ++b) s = __fadd_rn(s, parts[b * n + i]);  // no contraction: the CPU's bits
  out[i] = s;
}
}  // namespace

void sum_blocks_in_order(float* out, const float* parts, int64_t count, int64_t n) {
  if (n == 0) return;
  launch(sum_blocks_k, blocks(n), kThreads, 0, out, parts, count, n);
}

}  // namespace fbt::cuda
