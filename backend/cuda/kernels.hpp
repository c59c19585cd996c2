// CUDA kernels on raw device pointers, mirroring backend/cpu/kernels.hpp one for one (the same
// signatures, shapes and accumulate-into-gradient convention; the types both take are in
// backend/kernel_types.hpp), so an op names the twins of one signature (ops/dispatch.hpp) and tests
// pit each against its CPU twin. The CPU's packed few-row products have no twin here.
// No Eigen, no Tensor here. Reductions across rows run in a fixed order (no atomics), so results
// are deterministic run to run. Built only when the meson `cuda` option finds nvcc.
#pragma once
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "backend/kernel_types.hpp"

namespace fbt::cuda {

// Whether a CUDA device can be used here (false without a GPU or a driver); `why` says why not.
bool available(std::string* why = nullptr);
std::string device_name();

// Device memory and copies (errors throw std::runtime_error with file and line).
float* alloc(size_t n);
// Never throws: it runs in destructors, also while unwinding from another error. A failure is
// written to stderr once and the first one kept (free_error()), so the error that caused it is
// the one that reaches the user.
void free(void* p) noexcept;
std::string free_error();  // the first failure of free, or ""
enum class CopyKind { HostToDevice, DeviceToHost, DeviceToDevice };
void copy(void* dst, const void* src, size_t bytes, CopyKind kind);
// `rows` rows of row_bytes each; row r starts at dst + r*dst_pitch and src + r*src_pitch (bytes).
void copy_2d(void* dst, size_t dst_pitch, const void* src, size_t src_pitch, size_t row_bytes, size_t rows,
             CopyKind kind);
void to_device(float* dst, const float* src, size_t n);
void to_host(float* dst, const float* src, size_t n);
int32_t* alloc_i32(size_t n);
void to_device_i32(int32_t* dst, const int32_t* src, size_t n);
void memset_zero(float* p, size_t n);
// Host to device, queued behind the kernels already launched (small copies go through pinned
// staging memory, so the host does not wait for the device); src may be reused at once.
void upload(void* dst, const void* src, size_t bytes);
void synchronize();
// The most device memory fbt's allocations held at once (bytes), and the device's SGEMM rate
// (best of a few large products, GFLOP/s): `fbt bench` reports both.
size_t peak_allocated_bytes();
double sgemm_peak_gflops();

// Elementwise over n values, as the CPU kernels.
void dropout_mask(float* mask, float p, uint64_t seed, uint64_t counter, int64_t n);
void add_forward(float* y, const float* a, const float* b, int64_t n);
void mul_forward(float* y, const float* a, const float* b, int64_t n);
void mul_backward(float* da, float* db, const float* dy, const float* a, const float* b, int64_t n);
void scale_forward(float* y, const float* x, float s, int64_t n);
void axpy(float* y, float s, const float* x, int64_t n);
void add_rows(float* dst, int64_t dst_stride, const float* src, int64_t src_stride, int64_t rows, int64_t cols);
// dst = the parts end to end: part k is parts[k][0, offsets[k+1] - offsets[k]); parts (device
// pointers) and offsets (nparts + 1 prefix sums, offsets[nparts] = total) live on the device.
void gather(float* dst, const float* const* parts, const int64_t* offsets, int64_t nparts, int64_t total);
// keep: N flags on the device.
void mask_rows_forward(float* y, const float* x, const uint8_t* keep, int64_t N, int64_t C);
void mask_rows_backward(float* dx, const float* dy, const uint8_t* keep, int64_t N, int64_t C);

// y = x W^T + b (cuBLAS); backward accumulates dx += dy W, dW += dy^T x, db += colsum(dy).
void linear_forward(float* y, const float* x, const float* W, const float* b, int64_t N, int64_t In, int64_t Out);
void linear_backward(float* dx, float* dW, float* db, const float* dy, const float* x, const float* W, int64_t N,
                     int64_t In, int64_t Out);

void layernorm_forward(float* y, float* mean, float* rstd, const float* x, const float* w, const float* b, int64_t N,
                       int64_t C);
void layernorm_backward_input(float* dx, const float* dy, const float* x, const float* w, const float* mean,
                              const float* rstd, int64_t N, int64_t C, bool accumulate = true);
void layernorm_backward_params(float* dw, float* db, const float* dy, const float* x, const float* mean,
                               const float* rstd, int64_t N, int64_t C);

void geglu_forward(float* y, const float* u, int64_t N, int64_t F);
void geglu_backward(float* du, const float* dy, const float* u, int64_t N, int64_t F, bool accumulate = true);

void embedding_forward(float* y, const float* W, const int32_t* ids, int64_t N, int64_t D);
// The rows grouped by token (group_by_token): token tokens[u] gets the rows
// rows[starts[u] .. starts[u+1]), summed in that (row) order; all three arrays on the device.
void embedding_backward(float* dW, const float* dy, const int32_t* rows, const int32_t* tokens, const int32_t* starts,
                        int64_t U, int64_t D);

// As the CPU kernels (a negative target: no loss, no gradient), and nothing crosses to the host:
// loss[0] and g[0] are one float on the device. lse:(N) saved on the device.
void cross_entropy_forward(float* loss, float* lse, const float* logits, const int32_t* targets, int64_t N, int64_t V,
                           int64_t counted);
void cross_entropy_backward(float* dlogits, const float* g, int64_t counted, const float* logits, const float* lse,
                            const int32_t* targets, int64_t N, int64_t V);

// xs: a device array of K device pointers (and dxs likewise); a:(K) saved, on the device.
void weighted_sum_forward(float* y, float* a, const float* w, const float* const* xs, int64_t K, int64_t n);
void weighted_sum_backward(float* const* dxs, float* dw, const float* dy, const float* a, const float* const* xs,
                           int64_t K, int64_t n);

// As the CPU kernel: segments live on the device (segs itself on the host), bucket/bias/drop too.
// At most kMaxAttentionSegments segments (kernel_types.hpp).
void attention_forward(float* out, float* probs, const float* q, const KVRows* segs, int nsegs,
                       const int32_t* bucket, const float* bias, const float* drop, const AttentionDims& d,
                       const AttentionSpan& span = {});
void attention_backward(float* dq, float* dbias, float* dlogits, const float* dout, const float* q,
                        const KVRows* segs, int nsegs, const int32_t* bucket, const float* probs,
                        const float* drop, const AttentionDims& d, const AttentionSpan& span = {});

// One AdamW update over n values (t counts from 1); decay: per-element 0/1 flags; the gradients
// are multiplied by grad_scale as they are read (clipping).
void adamw_step(float* w, float* m, float* v, const float* g, const uint8_t* decay, int64_t n, double lr,
                double beta1, double beta2, double eps, double weight_decay, int64_t t, float grad_scale = 1.f);
// Sum of squares in a fixed order (double accumulation), for the global grad norm.
double sum_squares(const float* x, int64_t n);
// out (n) <- blocks 0, 1, ..., count-1 (n floats each, end to end) added in block order.
void sum_blocks_in_order(float* out, const float* blocks, int64_t count, int64_t n);

// Data-parallel runs (backend/comm): the GPU this process uses (local_rank modulo the devices),
// and NCCL, opened on first use (dlopen) where fbt was built with its header. nccl_available
// says why not. The communicator is bootstrapped from an id rank 0 makes and every rank receives.
void select_device(int local_rank);
bool nccl_available(std::string* why = nullptr);
constexpr size_t kNcclIdBytes = 128;
void nccl_unique_id(char* id);  // kNcclIdBytes
void nccl_init(const char* id, int rank, int size);
// data (n floats on the device) <- the sum over the ranks in rank order: every rank's data
// gathered (ncclAllGather), then added in rank order (sum_blocks_in_order).
void nccl_sum_ordered(float* data, size_t n);

}  // namespace fbt::cuda
