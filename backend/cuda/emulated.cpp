// The fbt::cuda interface (kernels.hpp) without a GPU, compiled two ways:
//  - FBT_CUDA_STUB: what libfbt links where nvcc was not found. available() says why not, and
//    nothing else is reachable (a tensor cannot get onto the device); each entry still throws.
//  - otherwise: an emulated device for tests. "Device" memory is host memory whose addresses
//    carry bit 62, which makes them non-canonical on x86-64: host code that dereferences a device
//    pointer faults at once, as it would on a GPU, and every kernel checks that the pointers it
//    gets are device pointers. The kernels are the CPU twins (same shapes, same conventions), so
//    the whole device path of the tape, the model and the trainer runs and is compared with the
//    CPU path on a machine without a GPU.
#include <algorithm>
#include <chrono>
#include <unordered_map>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "backend/comm.hpp"
#include "backend/attention_index.hpp"
#include "backend/cpu/kernels.hpp"
#include "backend/cuda/kernels.hpp"

namespace fbt::cuda {

namespace {
#ifdef FBT_CUDA_STUB
constexpr bool kStub = true;
#else
constexpr bool kStub = false;
#endif
constexpr uintptr_t kTag = uintptr_t(1) << 62;

void enter() {
  if (kStub) throw std::logic_error("fbt was built without CUDA: no CUDA kernel can run");
}

bool on_device(const void* p) { return (reinterpret_cast<uintptr_t>(p) & kTag) != 0; }

// The host address behind a device pointer (null stays null).
template <class T>
T* h(T* p) {
  if (!p) return nullptr;
  if (!on_device(p)) throw std::logic_error("emulated CUDA: a host pointer was passed where a device pointer belongs");
  return reinterpret_cast<T*>(reinterpret_cast<uintptr_t>(p) & ~kTag);
}
template <class T>
const T* host_side(const T* p, bool device) {
  if (!device) {
    if (on_device(p)) throw std::logic_error("emulated CUDA: a device pointer was passed where a host pointer belongs");
    return p;
  }
  return h(p);
}

// Whether any of `rows` rows of `bytes` at d, d + dp, ... meets one at s, s + sp, ... (pitches
// of at least `bytes` where rows > 1): cudaMemcpy2D's result is undefined then. Destination row
// r spans [ds + r dp, + bytes) from s, source row k [k sp, + bytes): they meet when
// ds + r dp - bytes < k sp < ds + r dp + bytes, a range of k found by division.
bool rows_overlap(const char* d, size_t dp, const char* s, size_t sp, size_t bytes, size_t rows) {
  const auto at = [](const char* p) { return int64_t(reinterpret_cast<uintptr_t>(p)); };
  const int64_t n = int64_t(rows), w = int64_t(bytes), ds = at(d) - at(s), step = rows > 1 ? int64_t(sp) : 1;
  for (int64_t r = 0; r < n; ++r) {
    const int64_t a = ds + r * int64_t(dp) - w, b = ds + r * int64_t(dp) + w;  // k sp in (a, b)
    const int64_t lo = a >= 0 ? a / step + 1 : -((-a) / step);                // the least k above a / sp
    const int64_t hi = b > 0 ? (b - 1) / step : -((-b) / step + 1);             // the greatest k below b / sp
    if (std::max<int64_t>(lo, 0) <= std::min(hi, n - 1)) return true;
  }
  return false;
}
}  // namespace

bool available(std::string* why) {
  if (kStub && why) *why = "fbt was built without CUDA (nvcc was not found when it was configured)";
  return !kStub;
}

std::string device_name() { return kStub ? "none" : "emulated CUDA device (host memory)"; }

namespace {
std::unordered_map<const void*, size_t> sizes;  // tests run the emulation on one thread
size_t now_bytes = 0, peak_bytes = 0;
}  // namespace

float* alloc(size_t n) {
  enter();
  const size_t bytes = (std::max<size_t>(n, 1) * sizeof(float) + 255) / 256 * 256;
  void* p = std::aligned_alloc(256, bytes);
  if (!p) throw std::bad_alloc();
  sizes[p] = bytes;
  peak_bytes = std::max(peak_bytes, now_bytes += bytes);
  return reinterpret_cast<float*>(reinterpret_cast<uintptr_t>(p) | kTag);
}
int32_t* alloc_i32(size_t n) { return reinterpret_cast<int32_t*>(alloc(n)); }
namespace {
std::string first_free_error;
}
std::string free_error() { return first_free_error; }
void free(void* p) noexcept {
  try {
    enter();
    if (!p) return;  // as cudaFree(nullptr)
    void* q = h(p);
    const auto it = sizes.find(q);
    // cudaFree of a pointer it never returned (or already took back) is an error on the device.
    if (it == sizes.end()) throw std::logic_error("emulated CUDA: free of a pointer alloc did not return (or freed twice)");
    now_bytes -= it->second;
    sizes.erase(it);
    std::free(q);
  } catch (const std::exception& e) {  // as the device's: reported once, kept, never thrown
    if (first_free_error.empty()) {
      first_free_error = e.what();
      std::fprintf(stderr, "fbt: cuda: %s\n", e.what());
    }
  }
}
size_t peak_allocated_bytes() { return peak_bytes; }
double sgemm_peak_gflops() {
  enter();
  const int64_t n = 512;
  std::vector<float> a(size_t(n * n), 1.f), c(size_t(n * n));
  const auto t0 = std::chrono::steady_clock::now();
  cpu::linear_forward(c.data(), a.data(), a.data(), nullptr, n, n, n);
  return 2.0 * double(n * n * n) / std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / 1e9;
}

void copy(void* dst, const void* src, size_t bytes, CopyKind kind) {
  enter();
  copy_2d(dst, bytes, src, bytes, bytes, 1, kind);
}
void copy_2d(void* dst, size_t dst_pitch, const void* src, size_t src_pitch, size_t row_bytes, size_t rows,
             CopyKind kind) {
  enter();
  if (!row_bytes || !rows) return;
  // cudaMemcpy2D refuses a pitch below the row's width; rows that overlap would be garbage there.
  if (rows > 1 && (dst_pitch < row_bytes || src_pitch < row_bytes))
    throw std::invalid_argument("cuda copy_2d: a pitch below the row's " + std::to_string(row_bytes) + " bytes");
  auto* d = const_cast<char*>(host_side(static_cast<const char*>(dst), kind != CopyKind::DeviceToHost));
  const auto* s = host_side(static_cast<const char*>(src), kind != CopyKind::HostToDevice);
  if (rows_overlap(d, dst_pitch, s, src_pitch, row_bytes, rows))
    throw std::invalid_argument("cuda copy_2d: source and destination rows overlap (" + std::to_string(rows) +
                                " rows of " + std::to_string(row_bytes) + " bytes)");
  for (size_t r = 0; r < rows; ++r) std::memcpy(d + r * dst_pitch, s + r * src_pitch, row_bytes);
}
void to_device(float* dst, const float* src, size_t n) { copy(dst, src, n * 4, CopyKind::HostToDevice); }
void to_host(float* dst, const float* src, size_t n) { copy(dst, src, n * 4, CopyKind::DeviceToHost); }
void to_device_i32(int32_t* dst, const int32_t* src, size_t n) { copy(dst, src, n * 4, CopyKind::HostToDevice); }
void upload(void* dst, const void* src, size_t bytes) { copy(dst, src, bytes, CopyKind::HostToDevice); }
void memset_zero(float* p, size_t n) {
  enter();
  if (n) std::memset(h(p), 0, n * sizeof(float));
}
void synchronize() { enter(); }

void dropout_mask(float* mask, float p, uint64_t seed, uint64_t counter, int64_t n) {
  enter(), cpu::dropout_mask(h(mask), p, seed, counter, n);
}
void add_forward(float* y, const float* a, const float* b, int64_t n) { enter(), cpu::add_forward(h(y), h(a), h(b), n); }
void mul_forward(float* y, const float* a, const float* b, int64_t n) { enter(), cpu::mul_forward(h(y), h(a), h(b), n); }
void mul_backward(float* da, float* db, const float* dy, const float* a, const float* b, int64_t n) {
  enter(), cpu::mul_backward(h(da), h(db), h(dy), h(a), h(b), n);
}
void scale_forward(float* y, const float* x, float s, int64_t n) { enter(), cpu::scale_forward(h(y), h(x), s, n); }
void axpy(float* y, float s, const float* x, int64_t n) { enter(), cpu::axpy(h(y), s, h(x), n); }
void add_rows(float* dst, int64_t dst_stride, const float* src, int64_t src_stride, int64_t rows, int64_t cols) {
  enter(), cpu::add_rows(h(dst), dst_stride, h(src), src_stride, rows, cols);
}
void gather(float* dst, const float* const* parts, const int64_t* offsets, int64_t nparts, int64_t total) {
  enter();
  const int64_t* at = h(offsets);
  if (total != at[nparts]) throw std::logic_error("emulated CUDA: gather offsets do not end at the total");
  for (int64_t k = 0; k < nparts; ++k)
    std::memcpy(h(dst) + at[k], h(h(parts)[k]), sizeof(float) * size_t(at[k + 1] - at[k]));
}
void mask_rows_forward(float* y, const float* x, const uint8_t* keep, int64_t N, int64_t C) {
  enter(), cpu::mask_rows_forward(h(y), h(x), h(keep), N, C);
}
void mask_rows_backward(float* dx, const float* dy, const uint8_t* keep, int64_t N, int64_t C) {
  enter(), cpu::mask_rows_backward(h(dx), h(dy), h(keep), N, C);
}

void linear_forward(float* y, const float* x, const float* W, const float* b, int64_t N, int64_t In, int64_t Out) {
  enter(), cpu::linear_forward(h(y), h(x), h(W), h(b), N, In, Out);
}
void linear_backward(float* dx, float* dW, float* db, const float* dy, const float* x, const float* W, int64_t N,
                     int64_t In, int64_t Out) {
  enter(), cpu::linear_backward(h(dx), h(dW), h(db), h(dy), h(x), h(W), N, In, Out);
}

void layernorm_forward(float* y, float* mean, float* rstd, const float* x, const float* w, const float* b, int64_t N,
                       int64_t C) {
  enter(), cpu::layernorm_forward(h(y), h(mean), h(rstd), h(x), h(w), h(b), N, C);
}
void layernorm_backward_input(float* dx, const float* dy, const float* x, const float* w, const float* mean,
                              const float* rstd, int64_t N, int64_t C, bool accumulate) {
  enter(), cpu::layernorm_backward_input(h(dx), h(dy), h(x), h(w), h(mean), h(rstd), N, C, accumulate);
}
void layernorm_backward_params(float* dw, float* db, const float* dy, const float* x, const float* mean,
                               const float* rstd, int64_t N, int64_t C) {
  enter(), cpu::layernorm_backward_params(h(dw), h(db), h(dy), h(x), h(mean), h(rstd), N, C);
}

void geglu_forward(float* y, const float* u, int64_t N, int64_t F) { enter(), cpu::geglu_forward(h(y), h(u), N, F); }
void geglu_backward(float* du, const float* dy, const float* u, int64_t N, int64_t F, bool accumulate) {
  enter(), cpu::geglu_backward(h(du), h(dy), h(u), N, F, accumulate);
}

void embedding_forward(float* y, const float* W, const int32_t* ids, int64_t N, int64_t D) {
  enter(), cpu::embedding_forward(h(y), h(W), h(ids), N, D);
}
void embedding_backward(float* dW, const float* dy, const int32_t* rows, const int32_t* tokens, const int32_t* starts,
                        int64_t U, int64_t D) {
  enter(), cpu::embedding_backward(h(dW), h(dy), h(rows), h(tokens), h(starts), U, D);
}

void cross_entropy_forward(float* loss, float* lse, const float* logits, const int32_t* targets, int64_t N, int64_t V,
                           int64_t counted) {
  enter(), cpu::cross_entropy_forward(h(loss), h(lse), h(logits), h(targets), N, V, counted);
}
void cross_entropy_backward(float* dlogits, const float* g, int64_t counted, const float* logits, const float* lse,
                            const int32_t* targets, int64_t N, int64_t V) {
  enter(), cpu::cross_entropy_backward(h(dlogits), h(g), counted, h(logits), h(lse), h(targets), N, V);
}

void weighted_sum_forward(float* y, float* a, const float* w, const float* const* xs, int64_t K, int64_t n) {
  enter();
  std::vector<const float*> x(static_cast<size_t>(K));  // the pointer array lives on the device, as do its entries
  for (int64_t k = 0; k < K; ++k) x[size_t(k)] = h(h(xs)[k]);
  cpu::weighted_sum_forward(h(y), h(a), h(w), x.data(), K, n);
}
void weighted_sum_backward(float* const* dxs, float* dw, const float* dy, const float* a, const float* const* xs,
                           int64_t K, int64_t n) {
  enter();
  std::vector<const float*> x(static_cast<size_t>(K));
  std::vector<float*> dx(static_cast<size_t>(K));
  for (int64_t k = 0; k < K; ++k) x[size_t(k)] = h(h(xs)[k]), dx[size_t(k)] = h(h(dxs)[k]);
  cpu::weighted_sum_backward(dx.data(), h(dw), h(dy), h(a), x.data(), K, n);
}

namespace {
// The segments as the CPU kernels take them; the GPU's limits enforced (segments passed by value,
// shared memory a block).
std::vector<KVRows> host_segments(const KVRows* segs, int nsegs, const AttentionDims& d) {
  if (nsegs > kMaxAttentionSegments) throw std::invalid_argument("cuda attention: more than 4 key/value segments");
  attention_index::check_shared_memory(d, attention_index::kGpuSharedLimit);
  std::vector<KVRows> r(segs, segs + nsegs);  // the array is on the host, its pointers on the device
  for (KVRows& s : r) s.data = h(s.data), s.grad = h(s.grad);
  return r;
}
// The span's device pointers as the CPU kernel reads them.
AttentionSpan host_span(AttentionSpan span) {
  span.z = h(span.z), span.dz = h(span.dz), span.distance = h(span.distance), span.raw = h(span.raw);
  return span;
}
}  // namespace

void attention_forward(float* out, float* probs, const float* q, const KVRows* segs, int nsegs,
                       const int32_t* bucket, const float* bias, const float* drop, const AttentionDims& d,
                       const AttentionSpan& span) {
  enter();
  const std::vector<KVRows> s = host_segments(segs, nsegs, d);
  cpu::attention_forward(h(out), h(probs), h(q), s.data(), nsegs, h(bucket), h(bias), h(drop), d, host_span(span));
}
void attention_backward(float* dq, float* dbias, float* dlogits, const float* dout, const float* q,
                        const KVRows* segs, int nsegs, const int32_t* bucket, const float* probs,
                        const float* drop, const AttentionDims& d, const AttentionSpan& span) {
  enter();
  const std::vector<KVRows> s = host_segments(segs, nsegs, d);
  cpu::attention_backward(h(dq), h(dbias), h(dlogits), h(dout), h(q), s.data(), nsegs, h(bucket), h(probs), h(drop), d,
                          host_span(span));
}

void adamw_step(float* w, float* m, float* v, const float* g, const uint8_t* decay, int64_t n, double lr, double beta1,
                double beta2, double eps, double weight_decay, int64_t t, float grad_scale) {
  enter(), cpu::adamw_step(h(w), h(m), h(v), h(g), h(decay), n, lr, beta1, beta2, eps, weight_decay, t, grad_scale);
}

double sum_squares(const float* x, int64_t n) {
  enter();
  return cpu::sum_squares(h(x), n);
}

void sum_blocks_in_order(float* out, const float* blocks, int64_t count, int64_t n) {
  enter();
  fbt::sum_blocks_in_order(h(out), h(blocks), size_t(count), size_t(n));
}

// One emulated device, and no NCCL: a data-parallel run on it sums through MPI on the host.
// For the test of ranks that disagree (tests/mpi_cli.sh), FBT_EMULATED_NCCL_RANK=r makes Open
// MPI's rank r alone claim NCCL; the ranks must then all take the host path together.
void select_device(int) { enter(); }
bool nccl_available(std::string* why) {
  const char* claim = std::getenv("FBT_EMULATED_NCCL_RANK");
  const char* rank = std::getenv("OMPI_COMM_WORLD_RANK");
  if (!kStub && claim && rank && std::string(claim) == rank) return true;
  if (why) *why = kStub ? "fbt was built without CUDA" : "the emulated device has no NCCL";
  return false;
}
void nccl_unique_id(char*) { throw std::logic_error("no NCCL on this device"); }
void nccl_init(const char*, int, int) { throw std::logic_error("no NCCL on this device"); }
void nccl_sum_ordered(float*, size_t) { throw std::logic_error("no NCCL on this device"); }

}  // namespace fbt::cuda
