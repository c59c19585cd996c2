// What the CUDA kernel files (backend/cuda/*.cu) share: the error checks, the one way a kernel
// is launched, the device scratch and cuBLAS's product, and the device-side reductions. Internal
// to backend/cuda; the interface is kernels.hpp.
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>

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

namespace fbt::cuda::detail {

constexpr int kThreads = 256;
inline int blocks(int64_t n) { return int((n + kThreads - 1) / kThreads); }

// Whether FBT_CUDA_SYNC=1: wait for every kernel and check it, so a fault is reported at the
// launch that made it (the first runs on a new GPU) rather than at the next blocking copy.
bool sync_every_launch();

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

// Device scratch for a kernel's temporaries, grown on demand and kept: no cudaMalloc/cudaFree
// (which waits for the device) per call. One stream, so one user at a time.
float* scratch(size_t n);

// C = op(A) op(B) (column-major), cuBLAS opened on first use (runtime.cu).
void sgemm(cublasOperation_t ta, cublasOperation_t tb, int64_t m, int64_t n, int64_t k, const float* A, int64_t lda,
           const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

__device__ inline float gelu_f(float x) { return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f)); }
__device__ inline float gelu_grad_f(float x) {
  const float cdf = 0.5f * (1.0f + erff(x * 0.70710678118654752f));
  return cdf + x * expf(-0.5f * x * x) * 0.3989422804014327f;
}

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

}  // namespace fbt::cuda::detail
