// The CUDA runtime side of fbt::cuda: devices, memory, copies and uploads, the device scratch,
// cuBLAS (opened on first use) and its measured rate, and the launch checks' switch.
#include <dlfcn.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <unordered_map>

#include "backend/cuda/common.cuh"

namespace fbt::cuda {

namespace detail {

// Whether FBT_CUDA_SYNC=1: wait for every kernel and check it, so a fault is reported at the
// launch that made it (the first runs on a new GPU) rather than at the next blocking copy.
bool sync_every_launch() {
  static const bool on = [] {
    const char* v = std::getenv("FBT_CUDA_SYNC");
    return v && std::string(v) == "1";
  }();
  return on;
}

namespace {
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
}  // namespace

// C = op(A) op(B) (column-major).
void sgemm(cublasOperation_t ta, cublasOperation_t tb, int64_t m, int64_t n, int64_t k, const float* A, int64_t lda,
           const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  const float one = 1.f;
  CUBLAS_CHECK(blas_api().sgemm(blas_api().handle, ta, tb, int(m), int(n), int(k), &one, A, int(lda), B, int(ldb), &beta,
                                C, int(ldc)));
}

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

}  // namespace detail

using namespace detail;

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

void select_device(int local_rank) {
  int n = 0;
  CUDA_CHECK(cudaGetDeviceCount(&n));
  if (n > 0) CUDA_CHECK(cudaSetDevice(local_rank % n));
}

}  // namespace fbt::cuda
