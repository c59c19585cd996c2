// Attention over key/value segments on the GPU, the twin of backend/cpu/attention.cpp.
#include "backend/attention_index.hpp"
#include "backend/cuda/common.cuh"

namespace fbt::cuda {

using namespace detail;
using namespace attention_index;

// ---- attention over segments (passed by value) ----

namespace {
constexpr int kMaxSegs = kMaxAttentionSegments;
struct Segs {
  KVRows s[kMaxSegs];
  int n;
};
__device__ inline const float* row_ptr(const Segs& sg, int64_t j, int64_t b, int64_t I, int* seg, int64_t* r) {
  return kv_row(sg.s, sg.n, j, b, I, seg, r);
}
// Head h's key in row j of the segments' concatenation, batch row b (its value I floats on).
__device__ inline const float* head_key(const Segs& sg, int64_t j, int64_t b, int64_t h, const AttentionDims& d) {
  int seg;
  int64_t r;
  return row_ptr(sg, j, b, d.H * d.Dh, &seg, &r) + h * d.Dh;
}

// One block of kAttnThreads per (batch, head, query). Warps take the keys, a warp's lanes split
// the head dimension and a fixed-order shuffle sums each dot product; the block reduces the
// softmax in shared memory (fixed trees); for the weighted sum over keys, thread (column c, group
// g) sums the keys j = g, g + G, ... so that a warp reads a value row contiguously, and the G
// partial sums are added in order. Shared memory: S floats, then G * Dh partials.

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


__global__ void attention_forward_k(float* out, float* probs, const float* q, Segs sg, const int32_t* bucket,
                                    const float* bias, const float* drop, AttentionDims d, AttentionSpan span) {
  extern __shared__ float sm[];
  __shared__ float red[kAttnThreads];
  const Query qy = query_of(blockIdx.x, d);
  const int64_t b = qy.b, h = qy.h, i = qy.i;
  const int64_t I = d.H * d.Dh, S = d.S;
  const float* qi = q + query_head(d, b, i, h);
  const int32_t* bk = bucket + i * S;
  auto key = [&](int64_t j) { return head_key(sg, j, b, h, d); };
  dots(sm, qi, S, d.Dh, key, [&](int64_t j) { return bk[j] >= 0; }, -INFINITY);
  float mx = -INFINITY;
  for (int64_t j = threadIdx.x; j < S; j += blockDim.x)
    if (bk[j] >= 0) mx = fmaxf(mx, sm[j] += bias ? bias[bk[j] * d.H + h] : 0.f);
  mx = block_reduce(mx, red, true);
  // probs, drop and dlogits are key-major (B, H, S, n): this query's entry for key j at [j * n].
  const int64_t kn = d.n, at = key_major(d, b, h, i);
  float* p = probs + at;
  float* o = out + query_head(d, b, i, h);
  if (mx == -INFINITY) {  // no visible key: zero probabilities, zero output
    for (int64_t j = threadIdx.x; j < S; j += blockDim.x) p[j * kn] = 0.f;
    for (int64_t c = threadIdx.x; c < d.Dh; c += blockDim.x) o[c] = 0.f;
    return;
  }
  float sum = 0.f;
  for (int64_t j = threadIdx.x; j < S; j += blockDim.x) sum += (sm[j] = bk[j] < 0 ? 0.f : expf(sm[j] - mx));
  const float inv = 1.0f / block_reduce(sum, red, false);
  for (int64_t j = threadIdx.x; j < S; j += blockDim.x) p[j * kn] = sm[j] * inv;
  if (span.z) {  // adaptive span: the softmax kept in raw, then masked and renormalized (kernel_types.hpp)
    float masked = 0.f;
    for (int64_t j = threadIdx.x; j < S; j += blockDim.x) {
      const float pj = p[j * kn];
      span.raw[at + j * kn] = pj;
      sm[j] = pj == 0.f ? 0.f : pj * fminf(fmaxf(span_ramp(span.z[h], span.distance[i * S + j], span.mem_len, span.ramp), 0.f), 1.f);
      masked += sm[j];
    }
    const float den = block_reduce(masked, red, false) + 1e-8f;
    for (int64_t j = threadIdx.x; j < S; j += blockDim.x) p[j * kn] = sm[j] / den;
  }
  const float* dr = drop ? drop + at : nullptr;
  for (int64_t j = threadIdx.x; j < S; j += blockDim.x) sm[j] = dr ? p[j * kn] * dr[j * kn] : p[j * kn];  // value j's weight
  __syncthreads();
  weighted_rows(o, false, sm, sm + S, S, d.Dh, [&](int64_t j) { return key(j) + I; });
}

// dlogits and dq, one block per (b, h, i) as the forward; key/value gradients then per (b, h,
// key row, column) summing the queries in order, so nothing is written by two threads.
__global__ void attention_dlogits_k(float* dq, float* dlogits, float* dz_parts, const float* dout, const float* q,
                                    Segs sg, const float* probs, const float* drop, AttentionDims d, AttentionSpan span) {
  extern __shared__ float sm[];
  __shared__ float red[kAttnThreads];
  const Query qy = query_of(blockIdx.x, d);
  const int64_t b = qy.b, h = qy.h, i = qy.i;
  const int64_t I = d.H * d.Dh, S = d.S;
  const float* doi = dout + query_head(d, b, i, h);
  const int64_t kn = d.n, at = key_major(d, b, h, i);
  const float* p = probs + at;
  const float* dr = drop ? drop + at : nullptr;
  float* dl = dlogits + at;
  auto key = [&](int64_t j) { return head_key(sg, j, b, h, d); };
  // The keys whose logit has a gradient: the weighted ones, and with a span those it masked.
  const float* raw = span.z ? span.raw + at : nullptr;
  auto live = [&](int64_t j) { return (raw ? raw[j * kn] : p[j * kn]) != 0.f; };
  dots(sm, doi, S, d.Dh, [&](int64_t j) { return key(j) + I; }, live, 0.f);
  float dot = 0.f;
  for (int64_t j = threadIdx.x; j < S; j += blockDim.x) {
    if (dr) sm[j] *= dr[j * kn];
    dot += p[j * kn] * sm[j];
  }
  dot = block_reduce(dot, red, false);
  if (raw) {  // the span's backward (backend/cpu/attention.cpp, span_backward): c = dot
    float kappa = 0.f, masked = 0.f, dz = 0.f;
    const float z = span.z[h], slope = float(span.mem_len) / float(span.ramp);
    auto ramp = [&](int64_t j) { return span_ramp(z, span.distance[i * S + j], span.mem_len, span.ramp); };
    for (int64_t j = threadIdx.x; j < S; j += blockDim.x) {
      kappa += p[j * kn] * (sm[j] - dot);
      if (raw[j * kn] != 0.f) masked += raw[j * kn] * fminf(fmaxf(ramp(j), 0.f), 1.f);
    }
    kappa = block_reduce(kappa, red, false);
    const float den = block_reduce(masked, red, false) + 1e-8f;
    for (int64_t j = threadIdx.x; j < S; j += blockDim.x) {
      const float r = raw[j * kn], gc = sm[j] - dot, x = ramp(j);
      if (r != 0.f && x >= 0.f && x <= 1.f) dz += r * gc / den * slope;
      dl[j * kn] = sm[j] = r == 0.f ? 0.f : p[j * kn] * gc - r * kappa;
    }
    dz = block_reduce(dz, red, false);
    if (threadIdx.x == 0) dz_parts[blockIdx.x] = dz;  // this query's share, summed in order below
  } else {
    for (int64_t j = threadIdx.x; j < S; j += blockDim.x) dl[j * kn] = sm[j] = p[j * kn] == 0.f ? 0.f : p[j * kn] * (sm[j] - dot);
  }
  __syncthreads();
  if (dq) weighted_rows(dq + query_head(d, b, i, h), true, sm, sm + S, S, d.Dh, key);
}

__global__ void attention_dkv_k(const float* dlogits, const float* dout, const float* q, Segs sg, const float* probs,
                                const float* drop, AttentionDims d) {
  const int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (t >= d.B * d.H * d.S * d.Dh) return;
  const KeyColumn kc = key_column_of(t, d);
  const int64_t b = kc.b, h = kc.h, j = kc.j, c = kc.c;
  const int64_t I = d.H * d.Dh;
  int seg;
  int64_t r;
  row_ptr(sg, j, b, I, &seg, &r);
  float* g = sg.s[seg].grad;
  if (!g) return;
  float dk = 0.f, dv = 0.f;
  for (int64_t i = 0; i < d.n; ++i) {
    const int64_t pi = key_major(d, b, h, i) + j * d.n;
    dk += dlogits[pi] * q[query_head(d, b, i, h) + c];
    const float w = drop ? probs[pi] * drop[pi] : probs[pi];
    dv += w * dout[query_head(d, b, i, h) + c];
  }
  float* row = g + b * sg.s[seg].batch_stride + r * 2 * I;
  row[h * d.Dh + c] += dk;
  row[I + h * d.Dh + c] += dv;
}

// dz[h] += the queries' shares of head h (blocks (b, h, i) of attention_dlogits_k), in (b, i) order.
__global__ void attention_dz_k(float* dz, const float* parts, AttentionDims d) {
  const int64_t h = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (h >= d.H) return;
  float s = 0.f;
  for (int64_t b = 0; b < d.B; ++b)
    for (int64_t i = 0; i < d.n; ++i) s += parts[(b * d.H + h) * d.n + i];
  dz[h] += s;
}

// One block per (bucket, head): its threads walk (batch, query, key) in a fixed order and the
// block sums them in a fixed tree.
__global__ void attention_dbias_k(float* dbias, const float* dlogits, const int32_t* bucket, AttentionDims d) {
  __shared__ float red[kAttnThreads];
  const int64_t bk = blockIdx.x / d.H, h = blockIdx.x % d.H, nS = d.n * d.S;
  float s = 0.f;
  for (int64_t e = threadIdx.x; e < d.B * nS; e += blockDim.x) {
    const int64_t b = e / nS, k = e % nS;
    if (bucket[(k % d.n) * d.S + k / d.n] == bk) s += dlogits[key_major(d, b, h, 0) + k];  // k = j * n + i
  }
  s = block_reduce(s, red, false);
  if (threadIdx.x == 0) dbias[blockIdx.x] += s;  // dbias is (NB, H): row bk, column h
}

// The dynamic shared memory a per-query attention kernel needs, allowed beyond the default 48 KB
// (long memories) up to what the device lets a block opt into; more is a clear error.
template <typename Kernel>
size_t shared_for(Kernel k, const AttentionDims& d) {
  const size_t bytes = dynamic_shared_bytes(d);
  if (bytes + kStaticSharedBytes > (size_t(48) << 10)) {
    int device = 0, optin = 0;
    CUDA_CHECK(cudaGetDevice(&device));
    CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
    check_shared_memory(d, size_t(optin));
    CUDA_CHECK(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
  }
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
                       const int32_t* bucket, const float* bias, const float* drop, const AttentionDims& d,
                       const AttentionSpan& span) {
  const size_t smem = shared_for(attention_forward_k, d);
  launch(attention_forward_k, d.B * d.H * d.n, kAttnThreads, smem, out, probs, q, pack(segs, nsegs), bucket, bias,
         drop, d, span);
}

void attention_backward(float* dq, float* dbias, float* dlogits, const float* dout, const float* q,
                        const KVRows* segs, int nsegs, const int32_t* bucket, const float* probs,
                        const float* drop, const AttentionDims& d, const AttentionSpan& span) {
  const Segs sg = pack(segs, nsegs);
  float* dz_parts = span.z ? scratch(size_t(d.B * d.H * d.n)) : nullptr;
  launch(attention_dlogits_k, d.B * d.H * d.n, kAttnThreads, shared_for(attention_dlogits_k, d), dq, dlogits, dz_parts,
         dout, q, sg, probs, drop, d, span);
  if (span.z && span.dz) launch(attention_dz_k, blocks(d.H), kThreads, 0, span.dz, dz_parts, d);
  launch(attention_dkv_k, blocks(d.B * d.H * d.S * d.Dh), kThreads, 0, dlogits, dout, q, sg, probs, drop, d);
  if (dbias && d.NB > 0) {
    launch(attention_dbias_k, int(d.NB * d.H), kAttnThreads, 0, dbias, dlogits, bucket, d);
  }
}

}  // namespace fbt::cuda
