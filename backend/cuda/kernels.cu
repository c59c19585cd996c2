// CUDA kernels mirroring backend/cpu/kernels.cpp (see kernels.hpp). Plain, correct first: one thread
// per row or per column where a reduction is needed (a fixed order, no atomics), cuBLAS for the
// matrix products. Eigen stays out of this file.
#include <cublas_v2.h>
#include <cuda_runtime.h>
#ifdef FBT_HAVE_NCCL
#include <nccl.h>
#endif

#include <dlfcn.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <unordered_map>
#include <stdexcept>
#include <string>
#include <vector>

#include "backend/rng.hpp"
#include "backend/cuda/kernels.hpp"

#define CUDA_CHECK(expr)                                                                                  \
  do {                                                                                                    \
    cudaError_t err_ = (expr);                                                                            \
    if (err_ != cudaSuccess)                                                                              \
      throw std::runtime_error(std::string(__FILE__) + ":" + std::to_string(__LINE__) + ": " #expr ": " + \
                               cudaGetErrorString(err_));                                                 \
  } while (0)
#define CUBLAS_CHECK(expr)                                                                                \
  do {                                                                                                    \
    cublasStatus_t st_ = (expr);                                                                          \
    if (st_ != CUBLAS_STATUS_SUCCESS)                                                                     \
      throw std::runtime_error(std::string(__FILE__) + ":" + std::to_string(__LINE__) + ": " #expr        \
                               " failed with cuBLAS status " + std::to_string(int(st_)));                 \
  } while (0)

#define FBT_STR2(x) #x
#define FBT_STR(x) FBT_STR2(x)

namespace fbt::cuda {

namespace {
constexpr int kThreads = 256;
inline int blocks(int64_t n) { return int((n + kThreads - 1) / kThreads); }

// Whether FBT_CUDA_SYNC=1: wait for every kernel and check it, so a fault is reported at the
// launch that made it (the first runs on a new GPU) rather than at the next blocking copy.
bool sync_every_launch() {
  static const bool on = [] {
    const char* v = std::getenv("FBT_CUDA_SYNC");
    return v && std::string(v) == "1";
  }();
  return on;
}

// Every kernel launch goes through here: an empty grid launches nothing (a zero-block launch is
// an error, and empty work is common: the first window of an empty memory has no keys, dropout
// of nothing), and the launch itself is checked.
template <typename... Params, typename... Args>
void launch(void (*kernel)(Params...), int64_t grid, int block, size_t smem, Args... args) {
  if (grid <= 0) return;
  kernel<<<unsigned(grid), unsigned(block), smem>>>(args...);
  CUDA_CHECK(cudaGetLastError());
  if (sync_every_launch()) CUDA_CHECK(cudaDeviceSynchronize());
}

// cuBLAS is opened on first use (dlopen), not linked: mapping it costs every process ~200 MB of
// resident pages, CPU-only runs included. These are the entry points fbt calls.
struct Blas {
  decltype(&cublasCreate_v2) create;
  decltype(&cublasSetMathMode) set_math_mode;
  decltype(&cublasSetAtomicsMode) set_atomics_mode;
  decltype(&cublasSgemm_v2) sgemm;
  cublasHandle_t handle;
};

const Blas& blas_api() {
  static const Blas b = [] {
    void* lib = dlopen("libcublas.so." FBT_STR(CUBLAS_VER_MAJOR), RTLD_NOW | RTLD_LOCAL);
    if (!lib) lib = dlopen("libcublas.so", RTLD_NOW | RTLD_LOCAL);
    if (!lib) throw std::runtime_error(std::string("cannot open cuBLAS: ") + dlerror());
    auto sym = [&](const char* name) {
      void* f = dlsym(lib, name);
      if (!f) throw std::runtime_error(std::string("cuBLAS lacks ") + name);
      return f;
    };
    Blas x{};
    x.create = reinterpret_cast<decltype(x.create)>(sym("cublasCreate_v2"));
    x.set_math_mode = reinterpret_cast<decltype(x.set_math_mode)>(sym("cublasSetMathMode"));
    x.set_atomics_mode = reinterpret_cast<decltype(x.set_atomics_mode)>(sym("cublasSetAtomicsMode"));
    x.sgemm = reinterpret_cast<decltype(x.sgemm)>(sym("cublasSgemm_v2"));
    CUBLAS_CHECK(x.create(&x.handle));
    // Deterministic: no atomics-based split-K, plain FP32 math.
    CUBLAS_CHECK(x.set_math_mode(x.handle, CUBLAS_PEDANTIC_MATH));
    CUBLAS_CHECK(x.set_atomics_mode(x.handle, CUBLAS_ATOMICS_NOT_ALLOWED));
    return x;
  }();
  return b;
}

// C = op(A) op(B) (column-major).
void sgemm(cublasOperation_t ta, cublasOperation_t tb, int64_t m, int64_t n, int64_t k, const float* A, int64_t lda,
           const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  const float one = 1.f;
  CUBLAS_CHECK(blas_api().sgemm(blas_api().handle, ta, tb, int(m), int(n), int(k), &one, A, int(lda), B, int(ldb), &beta,
                                C, int(ldc)));
}

__device__ inline float gelu_f(float x) { return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f)); }
__device__ inline float gelu_grad_f(float x) {
  const float cdf = 0.5f * (1.0f + erff(x * 0.70710678118654752f));
  return cdf + x * expf(-0.5f * x * x) * 0.3989422804014327f;
}
}  // namespace

bool available(std::string* why) {
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess || n == 0) {
    if (why) *why = e != cudaSuccess ? std::string("no CUDA device (") + cudaGetErrorString(e) + ")" : "no CUDA device";
    cudaGetLastError();  // clear the sticky error
    return false;
  }
  return true;
}

std::string device_name() {
  int device = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  cudaDeviceProp p{};
  CUDA_CHECK(cudaGetDeviceProperties(&p, device));
  return p.name;
}

namespace {
struct Usage {
  std::mutex mu;
  std::unordered_map<void*, size_t> sizes;
  size_t now = 0, peak = 0;
};
Usage& usage() {
  static Usage u;
  return u;
}
}  // namespace

float* alloc(size_t n) {
  void* p = nullptr;
  const size_t bytes = std::max<size_t>(n, 1) * sizeof(float);
  CUDA_CHECK(cudaMalloc(&p, bytes));
  Usage& u = usage();
  std::lock_guard<std::mutex> lock(u.mu);
  u.sizes[p] = bytes;
  u.peak = std::max(u.peak, u.now += bytes);
  return static_cast<float*>(p);
}
int32_t* alloc_i32(size_t n) { return reinterpret_cast<int32_t*>(alloc(n)); }
namespace {
std::mutex free_error_mu;
std::string first_free_error;
}  // namespace

std::string free_error() {
  std::lock_guard<std::mutex> lock(free_error_mu);
  return first_free_error;
}

void free(void* p) noexcept {
  if (!p) return;
  // At process exit the runtime may be unloaded before the last buffers are released: nothing to do.
  if (const cudaError_t e = cudaFree(p); e == cudaErrorCudartUnloading) {
    return;
  } else if (e != cudaSuccess) {
    std::lock_guard<std::mutex> lock(free_error_mu);
    if (first_free_error.empty()) {
      first_free_error = std::string("cudaFree: ") + cudaGetErrorString(e);
      std::fprintf(stderr, "fbt: cuda: %s (after an earlier error, usually)\n", first_free_error.c_str());
    }
    return;
  }
  Usage& u = usage();
  std::lock_guard<std::mutex> lock(u.mu);
  u.now -= u.sizes[p];
  u.sizes.erase(p);
}
size_t peak_allocated_bytes() {
  std::lock_guard<std::mutex> lock(usage().mu);
  return usage().peak;
}
void to_device(float* dst, const float* src, size_t n) { CUDA_CHECK(cudaMemcpy(dst, src, n * 4, cudaMemcpyHostToDevice)); }
void to_host(float* dst, const float* src, size_t n) { CUDA_CHECK(cudaMemcpy(dst, src, n * 4, cudaMemcpyDeviceToHost)); }
void to_device_i32(int32_t* dst, const int32_t* src, size_t n) {
  CUDA_CHECK(cudaMemcpy(dst, src, n * 4, cudaMemcpyHostToDevice));
}
void memset_zero(float* p, size_t n) { CUDA_CHECK(cudaMemset(p, 0, n * 4)); }

namespace {
// Device scratch for a kernel's temporaries, grown on demand and kept: no cudaMalloc/cudaFree
// (which waits for the device) per call. One stream, so one user at a time.
float* scratch(size_t n) {
  static float* p = nullptr;
  static size_t cap = 0;
  if (n > cap) {
    free(p);
    cap = std::max(n, 2 * cap);
    p = alloc(cap);
  }
  return p;
}

// Pinned host memory that small uploads are staged through, so they are queued behind the
// kernels (cudaMemcpyAsync) instead of waiting for them. A ring: before a region is reused,
// the device has drained every copy queued from it.
struct Staging {
  char* base = nullptr;
  size_t size = size_t(64) << 20, at = 0;
};
}  // namespace

void upload(void* dst, const void* src, size_t bytes) {
  static Staging st;
  if (bytes == 0) return;
  if (bytes > st.size / 4) return copy(dst, src, bytes, CopyKind::HostToDevice);  // large: a plain copy
  if (!st.base) CUDA_CHECK(cudaMallocHost(reinterpret_cast<void**>(&st.base), st.size));
  if (st.at + bytes > st.size) {
    CUDA_CHECK(cudaDeviceSynchronize());
    st.at = 0;
  }
  std::memcpy(st.base + st.at, src, bytes);
  CUDA_CHECK(cudaMemcpyAsync(dst, st.base + st.at, bytes, cudaMemcpyHostToDevice, 0));
  st.at = (st.at + bytes + 255) / 256 * 256;
}

namespace {
cudaMemcpyKind kind_of(CopyKind k) {
  return k == CopyKind::HostToDevice   ? cudaMemcpyHostToDevice
         : k == CopyKind::DeviceToHost ? cudaMemcpyDeviceToHost
                                       : cudaMemcpyDeviceToDevice;
}
}  // namespace

void copy(void* dst, const void* src, size_t bytes, CopyKind kind) {
  if (bytes) CUDA_CHECK(cudaMemcpy(dst, src, bytes, kind_of(kind)));
}
void copy_2d(void* dst, size_t dst_pitch, const void* src, size_t src_pitch, size_t row_bytes, size_t rows,
             CopyKind kind) {
  if (row_bytes && rows) CUDA_CHECK(cudaMemcpy2D(dst, dst_pitch, src, src_pitch, row_bytes, rows, kind_of(kind)));
}

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
// Sum of one value per thread of a kThreads-wide block, in a fixed tree order (deterministic);
// the result is valid in thread 0.
__device__ inline double block_sum(double v) {
  __shared__ double part[kThreads];
  part[threadIdx.x] = v;
  __syncthreads();
  for (int o = blockDim.x / 2; o > 0; o >>= 1) {
    if (int(threadIdx.x) < o) part[threadIdx.x] += part[threadIdx.x + o];
    __syncthreads();
  }
  return part[0];
}

__device__ inline float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Sum (or max) of one value per thread over a power-of-two block in a fixed tree order; every
// thread gets the result. red: blockDim.x floats of shared memory.
__device__ inline float block_reduce(float v, float* red, bool take_max) {
  red[threadIdx.x] = v;
  __syncthreads();
  for (int o = blockDim.x / 2; o > 0; o >>= 1) {
    if (int(threadIdx.x) < o)
      red[threadIdx.x] = take_max ? fmaxf(red[threadIdx.x], red[threadIdx.x + o]) : red[threadIdx.x] + red[threadIdx.x + o];
    __syncthreads();
  }
  const float r = red[0];
  __syncthreads();  // red is reused by the next reduction
  return r;
}

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

// ---- attention over segments (passed by value) ----

namespace {
constexpr int kMaxSegs = kMaxAttentionSegments;
struct Segs {
  KVRows s[kMaxSegs];
  int n;
};
__device__ inline const float* row_ptr(const Segs& sg, int64_t j, int64_t b, int64_t I, int* seg, int64_t* r) {
  for (int k = 0; k < sg.n; ++k) {
    if (j < sg.s[k].rows) {
      *seg = k, *r = j;
      return sg.s[k].data + b * sg.s[k].batch_stride + j * 2 * I;
    }
    j -= sg.s[k].rows;
  }
  return nullptr;
}

// One block of kAttnThreads per (batch, head, query). Warps take the keys, a warp's lanes split
// the head dimension and a fixed-order shuffle sums each dot product; the block reduces the
// softmax in shared memory (fixed trees); for the weighted sum over keys, thread (column c, group
// g) sums the keys j = g, g + G, ... so that a warp reads a value row contiguously, and the G
// partial sums are added in order. Shared memory: S floats, then G * Dh partials.
constexpr int kAttnThreads = 128;

// out[c] (+)= sum_j w[j] rows(j)[c] for the Dh columns, w in shared memory; see above.
template <typename Row>
__device__ void weighted_rows(float* out, bool accumulate, const float* w, float* part, int64_t S, int64_t Dh, Row row) {
  const int64_t G = blockDim.x >= Dh ? blockDim.x / Dh : 1;
  for (int64_t idx = threadIdx.x; idx < G * Dh; idx += blockDim.x) {
    const int64_t c = idx % Dh, g = idx / Dh;
    float s = 0.f;
    for (int64_t j = g; j < S; j += G)
      if (w[j] != 0.f) s += w[j] * row(j)[c];
    part[idx] = s;
  }
  __syncthreads();
  for (int64_t c = threadIdx.x; c < Dh; c += blockDim.x) {
    float s = accumulate ? out[c] : 0.f;
    for (int64_t g = 0; g < G; ++g) s += part[g * Dh + c];
    out[c] = s;
  }
}

// sm[j] = rows(j) . x over the Dh columns for the keys with keep(j), else `otherwise`.
template <typename Row, typename Keep>
__device__ void dots(float* sm, const float* x, int64_t S, int64_t Dh, Row row, Keep keep, float otherwise) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  for (int64_t j = warp; j < S; j += warps) {
    if (!keep(j)) {
      if (lane == 0) sm[j] = otherwise;
      continue;
    }
    const float* rj = row(j);
    float s = 0.f;
    for (int64_t c = lane; c < Dh; c += 32) s += x[c] * rj[c];
    s = warp_sum(s);
    if (lane == 0) sm[j] = s;
  }
  __syncthreads();
}

size_t attention_shared_bytes(const AttentionDims& d) {
  return sizeof(float) * size_t(d.S + std::max<int64_t>(kAttnThreads, d.Dh));
}

__global__ void attention_forward_k(float* out, float* probs, const float* q, Segs sg, const int32_t* bucket,
                                    const float* bias, const float* drop, AttentionDims d) {
  extern __shared__ float sm[];
  __shared__ float red[kAttnThreads];
  const int64_t t = blockIdx.x;  // = (b * H + h) * n + i
  const int64_t i = t % d.n, h = (t / d.n) % d.H, b = t / (d.n * d.H);
  const int64_t I = d.H * d.Dh, S = d.S;
  const float* qi = q + (b * d.n + i) * I + h * d.Dh;
  const int32_t* bk = bucket + i * S;
  auto key = [&](int64_t j) {
    int seg;
    int64_t r;
    return row_ptr(sg, j, b, I, &seg, &r) + h * d.Dh;
  };
  dots(sm, qi, S, d.Dh, key, [&](int64_t j) { return bk[j] >= 0; }, -INFINITY);
  float mx = -INFINITY;
  for (int64_t j = threadIdx.x; j < S; j += blockDim.x)
    if (bk[j] >= 0) mx = fmaxf(mx, sm[j] += bias ? bias[bk[j] * d.H + h] : 0.f);
  mx = block_reduce(mx, red, true);
  // probs, drop and dlogits are key-major (B, H, S, n): this query's entry for key j at [j * n].
  const int64_t kn = d.n, at = (b * d.H + h) * S * kn + i;
  float* p = probs + at;
  float* o = out + (b * d.n + i) * I + h * d.Dh;
  if (mx == -INFINITY) {  // no visible key: zero probabilities, zero output
    for (int64_t j = threadIdx.x; j < S; j += blockDim.x) p[j * kn] = 0.f;
    for (int64_t c = threadIdx.x; c < d.Dh; c += blockDim.x) o[c] = 0.f;
    return;
  }
  float sum = 0.f;
  for (int64_t j = threadIdx.x; j < S; j += blockDim.x) sum += (sm[j] = bk[j] < 0 ? 0.f : expf(sm[j] - mx));
  const float inv = 1.0f / block_reduce(sum, red, false);
  const float* dr = drop ? drop + at : nullptr;
  for (int64_t j = threadIdx.x; j < S; j += blockDim.x) {
    p[j * kn] = sm[j] * inv;
    sm[j] = dr ? p[j * kn] * dr[j * kn] : p[j * kn];  // the weight of value j
  }
  __syncthreads();
  weighted_rows(o, false, sm, sm + S, S, d.Dh, [&](int64_t j) { return key(j) + I; });
}

// dlogits and dq, one block per (b, h, i) as the forward; key/value gradients then per (b, h,
// key row, column) summing the queries in order, so nothing is written by two threads.
__global__ void attention_dlogits_k(float* dq, float* dlogits, const float* dout, const float* q, Segs sg,
                                    const float* probs, const float* drop, AttentionDims d) {
  extern __shared__ float sm[];
  __shared__ float red[kAttnThreads];
  const int64_t t = blockIdx.x;
  const int64_t i = t % d.n, h = (t / d.n) % d.H, b = t / (d.n * d.H);
  const int64_t I = d.H * d.Dh, S = d.S;
  const float* doi = dout + (b * d.n + i) * I + h * d.Dh;
  const int64_t kn = d.n, at = (b * d.H + h) * S * kn + i;  // key-major, as the forward
  const float* p = probs + at;
  const float* dr = drop ? drop + at : nullptr;
  float* dl = dlogits + at;
  auto key = [&](int64_t j) {
    int seg;
    int64_t r;
    return row_ptr(sg, j, b, I, &seg, &r) + h * d.Dh;
  };
  dots(sm, doi, S, d.Dh, [&](int64_t j) { return key(j) + I; }, [&](int64_t j) { return p[j * kn] != 0.f; }, 0.f);
  float dot = 0.f;
  for (int64_t j = threadIdx.x; j < S; j += blockDim.x) {
    if (dr) sm[j] *= dr[j * kn];
    dot += p[j * kn] * sm[j];
  }
  dot = block_reduce(dot, red, false);
  for (int64_t j = threadIdx.x; j < S; j += blockDim.x) dl[j * kn] = sm[j] = p[j * kn] == 0.f ? 0.f : p[j * kn] * (sm[j] - dot);
  __syncthreads();
  if (dq) weighted_rows(dq + (b * d.n + i) * I + h * d.Dh, true, sm, sm + S, S, d.Dh, key);
}

__global__ void attention_dkv_k(const float* dlogits, const float* dout, const float* q, Segs sg, const float* probs,
                                const float* drop, AttentionDims d) {
  const int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (t >= d.B * d.H * d.S * d.Dh) return;
  const int64_t c = t % d.Dh, j = (t / d.Dh) % d.S, h = (t / (d.Dh * d.S)) % d.H, b = t / (d.Dh * d.S * d.H);
  const int64_t I = d.H * d.Dh, S = d.S;
  int seg;
  int64_t r;
  row_ptr(sg, j, b, I, &seg, &r);
  float* g = sg.s[seg].grad;
  if (!g) return;
  float dk = 0.f, dv = 0.f;
  for (int64_t i = 0; i < d.n; ++i) {
    const int64_t pi = ((b * d.H + h) * S + j) * d.n + i;  // key-major
    dk += dlogits[pi] * q[(b * d.n + i) * I + h * d.Dh + c];
    const float w = drop ? probs[pi] * drop[pi] : probs[pi];
    dv += w * dout[(b * d.n + i) * I + h * d.Dh + c];
  }
  float* row = g + b * sg.s[seg].batch_stride + r * 2 * I;
  row[h * d.Dh + c] += dk;
  row[I + h * d.Dh + c] += dv;
}

// One block per (bucket, head): its threads walk (batch, query, key) in a fixed order and the
// block sums them in a fixed tree.
__global__ void attention_dbias_k(float* dbias, const float* dlogits, const int32_t* bucket, AttentionDims d) {
  __shared__ float red[kAttnThreads];
  const int64_t bk = blockIdx.x / d.H, h = blockIdx.x % d.H, nS = d.n * d.S;
  float s = 0.f;
  for (int64_t e = threadIdx.x; e < d.B * nS; e += blockDim.x) {
    const int64_t b = e / nS, k = e % nS;
    if (bucket[(k % d.n) * d.S + k / d.n] == bk) s += dlogits[(b * d.H + h) * nS + k];  // k = j * n + i
  }
  s = block_reduce(s, red, false);
  if (threadIdx.x == 0) dbias[blockIdx.x] += s;  // dbias is (NB, H): row bk, column h
}

// The dynamic shared memory a per-query attention kernel needs, allowed beyond the default 48 KB
// (long memories) where the device has it.
template <typename Kernel>
size_t shared_for(Kernel k, const AttentionDims& d) {
  const size_t bytes = attention_shared_bytes(d);
  if (bytes > (size_t(48) << 10))
    CUDA_CHECK(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
  return bytes;
}

Segs pack(const KVRows* segs, int nsegs) {
  if (nsegs > kMaxSegs) throw std::invalid_argument("cuda attention: more than 4 key/value segments");
  Segs s{};
  for (int k = 0; k < nsegs; ++k) s.s[k] = segs[k];
  s.n = nsegs;
  return s;
}
}  // namespace

void attention_forward(float* out, float* probs, const float* q, const KVRows* segs, int nsegs,
                       const int32_t* bucket, const float* bias, const float* drop, const AttentionDims& d) {
  const size_t smem = shared_for(attention_forward_k, d);
  launch(attention_forward_k, d.B * d.H * d.n, kAttnThreads, smem, out, probs, q, pack(segs, nsegs), bucket, bias,
         drop, d);
}

void attention_backward(float* dq, float* dbias, float* dlogits, const float* dout, const float* q,
                        const KVRows* segs, int nsegs, const int32_t* bucket, const float* probs,
                        const float* drop, const AttentionDims& d) {
  const Segs sg = pack(segs, nsegs);
  launch(attention_dlogits_k, d.B * d.H * d.n, kAttnThreads, shared_for(attention_dlogits_k, d), dq, dlogits, dout,
         q, sg, probs, drop, d);
  launch(attention_dkv_k, blocks(d.B * d.H * d.S * d.Dh), kThreads, 0, dlogits, dout, q, sg, probs, drop, d);
  if (dbias && d.NB > 0) {
    launch(attention_dbias_k, int(d.NB * d.H), kAttnThreads, 0, dbias, dlogits, bucket, d);
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

double sgemm_peak_gflops() {
  const int64_t n = 4096;
  float *a = alloc(size_t(n * n)), *b = alloc(size_t(n * n)), *c = alloc(size_t(n * n));
  memset_zero(a, size_t(n * n)), memset_zero(b, size_t(n * n));
  cudaEvent_t start, stop;
  CUDA_CHECK(cudaEventCreate(&start));
  CUDA_CHECK(cudaEventCreate(&stop));
  double best = 0;
  for (int rep = 0; rep < 4; ++rep) {  // the first one also loads cuBLAS's kernels
    CUDA_CHECK(cudaEventRecord(start));
    sgemm(CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, a, n, b, n, 0.f, c, n);
    CUDA_CHECK(cudaEventRecord(stop));
    CUDA_CHECK(cudaEventSynchronize(stop));
    float ms = 0;
    CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    best = std::max(best, 2.0 * double(n * n * n) / (double(ms) * 1e-3) / 1e9);
  }
  CUDA_CHECK(cudaEventDestroy(start));
  CUDA_CHECK(cudaEventDestroy(stop));
  free(a), free(b), free(c);
  return best;
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

void select_device(int local_rank) {
  int n = 0;
  CUDA_CHECK(cudaGetDeviceCount(&n));
  if (n > 0) CUDA_CHECK(cudaSetDevice(local_rank % n));
}

#ifdef FBT_HAVE_NCCL
namespace {
// NCCL is opened on first use, as cuBLAS is: only data-parallel GPU runs map it.
struct Nccl {
  decltype(&ncclGetUniqueId) get_unique_id = nullptr;
  decltype(&ncclCommInitRank) init_rank = nullptr;
  decltype(&ncclAllGather) all_gather = nullptr;
  decltype(&ncclGetErrorString) error_string = nullptr;
  std::string why;  // empty when usable
  ncclComm_t comm = nullptr;
  int size = 1;
  float* gathered = nullptr;  // size x n floats, grown as needed
  size_t gathered_n = 0;
};

Nccl& nccl() {
  static Nccl x = [] {
    Nccl n;
    void* lib = dlopen("libnccl.so." FBT_STR(NCCL_MAJOR), RTLD_NOW | RTLD_LOCAL);
    if (!lib) lib = dlopen("libnccl.so", RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
      n.why = std::string("cannot open NCCL: ") + dlerror();
      return n;
    }
    n.get_unique_id = reinterpret_cast<decltype(n.get_unique_id)>(dlsym(lib, "ncclGetUniqueId"));
    n.init_rank = reinterpret_cast<decltype(n.init_rank)>(dlsym(lib, "ncclCommInitRank"));
    n.all_gather = reinterpret_cast<decltype(n.all_gather)>(dlsym(lib, "ncclAllGather"));
    n.error_string = reinterpret_cast<decltype(n.error_string)>(dlsym(lib, "ncclGetErrorString"));
    if (!n.get_unique_id || !n.init_rank || !n.all_gather || !n.error_string) n.why = "NCCL lacks an entry point fbt needs";
    return n;
  }();
  return x;
}

void nccl_check(ncclResult_t r, const char* what) {
  if (r != ncclSuccess) throw std::runtime_error(std::string("NCCL ") + what + ": " + nccl().error_string(r));
}
}  // namespace

bool nccl_available(std::string* why) {
  if (why) *why = nccl().why;
  return nccl().why.empty();
}

void nccl_unique_id(char* id) {
  ncclUniqueId u;
  nccl_check(nccl().get_unique_id(&u), "ncclGetUniqueId");
  std::memcpy(id, u.internal, kNcclIdBytes);
}

void nccl_init(const char* id, int rank, int size) {
  ncclUniqueId u;
  std::memcpy(u.internal, id, kNcclIdBytes);
  Nccl& n = nccl();
  nccl_check(n.init_rank(&n.comm, size, u, rank), "ncclCommInitRank");
  n.size = size;
}

void nccl_sum_ordered(float* data, size_t count) {
  Nccl& n = nccl();
  if (!n.comm) throw std::logic_error("nccl_sum_ordered before nccl_init");
  if (n.gathered_n < count) {
    if (n.gathered) free(n.gathered);
    n.gathered = alloc(count * size_t(n.size));
    n.gathered_n = count;
  }
  nccl_check(n.all_gather(data, n.gathered, count, ncclFloat32, n.comm, /*stream=*/0), "ncclAllGather");
  sum_blocks_in_order(data, n.gathered, n.size, int64_t(count));
}
#else
bool nccl_available(std::string* why) {
  if (why) *why = "fbt was built without NCCL (nccl.h was not found when it was configured)";
  return false;
}
void nccl_unique_id(char*) { throw std::logic_error("fbt was built without NCCL"); }
void nccl_init(const char*, int, int) { throw std::logic_error("fbt was built without NCCL"); }
void nccl_sum_ordered(float*, size_t) { throw std::logic_error("fbt was built without NCCL"); }
#endif

}  // namespace fbt::cuda
