// The widest float vector the compiler targets, for the hand-blocked CPU kernels: 16 lanes with
// AVX-512, 8 with AVX2/FMA. Without either, FBT_SIMD is undefined (register-blocked kernels keep
// plain loops) and vf is a single float, so code written with vf runs either way. Internal to
// ops/cpu.
//
// Same bits at every width: an element-wise function does the same operations in each lane (the
// last partial vector masked, not a scalar loop), and a sum over a row is defined on 16 lanes
// (kSumLanes) whatever the width: AVX2 keeps each 16-lane accumulator as two vectors and adds
// them in the order AVX-512's horizontal sum does. So AVX2 and AVX-512 builds train the same
// weights bit for bit (tests/isa_bits.sh).
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

namespace fbt::cpu::simd {

#if defined(__AVX512F__)
#define FBT_SIMD 1
using vf = __m512;
constexpr int64_t kLanes = 16;
inline vf vload(const float* p) { return _mm512_loadu_ps(p); }
inline void vstore(float* p, vf v) { _mm512_storeu_ps(p, v); }
inline void vstream(float* p, vf v) { _mm512_stream_ps(p, v); }  // p aligned to a vector; past the caches
inline vf vzero() { return _mm512_setzero_ps(); }
inline vf vbroadcast(const float* p) { return _mm512_set1_ps(*p); }
inline vf vset1(float x) { return _mm512_set1_ps(x); }
inline vf vfma(vf a, vf b, vf c) { return _mm512_fmadd_ps(a, b, c); }
inline vf vadd(vf a, vf b) { return _mm512_add_ps(a, b); }
inline vf vsub(vf a, vf b) { return _mm512_sub_ps(a, b); }
inline vf vmul(vf a, vf b) { return _mm512_mul_ps(a, b); }
inline vf vdiv(vf a, vf b) { return _mm512_div_ps(a, b); }
inline vf vmax(vf a, vf b) { return _mm512_max_ps(a, b); }  // a > b ? a : b (b where either is NaN)
inline vf vmin(vf a, vf b) { return _mm512_min_ps(a, b); }  // a < b ? a : b
inline vf vround(vf a) { return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
// 2^n for integral n in [-127, 127] (2^-127 gives 0), built in the exponent bits.
inline vf vpow2(vf n) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23));
}
// The lanes added in the order _mm512_reduce_add_ps adds them: (i, i + 8), then (i, i + 4),
// (i, i + 2), (0, 1). hsum(vsum) below repeats this order at other widths.
inline float hsum(vf v) { return _mm512_reduce_add_ps(v); }
// The first n < kLanes lanes of a vector: a row's last, partial vector. Masked-out lanes are
// neither read (no fault past the end of a buffer) nor written.
using vmask = __mmask16;
inline vmask lanes(int64_t n) { return vmask((1u << n) - 1u); }
inline vf vload_part(const float* p, vmask m) { return _mm512_maskz_loadu_ps(m, p); }
inline void vstore_part(float* p, vf v, vmask m) { _mm512_mask_storeu_ps(p, m, v); }
#elif defined(__AVX2__) && defined(__FMA__)
#define FBT_SIMD 1
using vf = __m256;
constexpr int64_t kLanes = 8;
inline vf vload(const float* p) { return _mm256_loadu_ps(p); }
inline void vstore(float* p, vf v) { _mm256_storeu_ps(p, v); }
inline void vstream(float* p, vf v) { _mm256_stream_ps(p, v); }
inline vf vzero() { return _mm256_setzero_ps(); }
inline vf vbroadcast(const float* p) { return _mm256_broadcast_ss(p); }
inline vf vset1(float x) { return _mm256_set1_ps(x); }
inline vf vfma(vf a, vf b, vf c) { return _mm256_fmadd_ps(a, b, c); }
inline vf vadd(vf a, vf b) { return _mm256_add_ps(a, b); }
inline vf vsub(vf a, vf b) { return _mm256_sub_ps(a, b); }
inline vf vmul(vf a, vf b) { return _mm256_mul_ps(a, b); }
inline vf vdiv(vf a, vf b) { return _mm256_div_ps(a, b); }
inline vf vmax(vf a, vf b) { return _mm256_max_ps(a, b); }
inline vf vmin(vf a, vf b) { return _mm256_min_ps(a, b); }
inline vf vround(vf a) { return _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
inline vf vpow2(vf n) {
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23));
}
// (i, i + 4), (i, i + 2), (0, 1): the last three steps of AVX-512's order.
inline float hsum(vf v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
using vmask = __m256i;
inline vmask lanes(int64_t n) { return _mm256_cmpgt_epi32(_mm256_set1_epi32(int(n)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)); }
inline vf vload_part(const float* p, vmask m) { return _mm256_maskload_ps(p, m); }
inline void vstore_part(float* p, vf v, vmask m) { _mm256_maskstore_ps(p, m, v); }
#else
// No vector unit targeted: one-lane "vectors", so code written with these still compiles and runs.
using vf = float;
constexpr int64_t kLanes = 1;
inline vf vload(const float* p) { return *p; }
inline void vstore(float* p, vf v) { *p = v; }
inline void vstream(float* p, vf v) { *p = v; }
inline vf vzero() { return 0.f; }
inline vf vbroadcast(const float* p) { return *p; }
inline vf vset1(float x) { return x; }
inline vf vfma(vf a, vf b, vf c) { return std::fma(a, b, c); }
inline vf vadd(vf a, vf b) { return a + b; }
inline vf vsub(vf a, vf b) { return a - b; }
inline vf vmul(vf a, vf b) { return a * b; }
inline vf vdiv(vf a, vf b) { return a / b; }
inline vf vmax(vf a, vf b) { return a > b ? a : b; }  // as the vector instructions treat NaN
inline vf vmin(vf a, vf b) { return a < b ? a : b; }
inline vf vround(vf a) { return std::nearbyint(a); }
inline vf vpow2(vf n) {
  const uint32_t bits = uint32_t(int32_t(n) + 127) << 23;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}
inline float hsum(vf v) { return v; }
using vmask = bool;  // one lane: a partial vector never occurs
inline vmask lanes(int64_t n) { return n > 0; }
inline vf vload_part(const float* p, vmask m) { return m ? *p : 0.f; }
inline void vstore_part(float* p, vf v, vmask m) {
  if (m) *p = v;
}
#endif

// Orders this thread's streamed stores before whatever it writes next (a barrier's flag).
inline void stream_fence() {
#ifdef FBT_SIMD
  _mm_sfence();
#endif
}

// A 16-lane accumulator as 16 / kLanes vectors: one with AVX-512, two with AVX2, 16 floats
// without SIMD. Lane l of a sum takes elements l, l + 16, ... at every width.
constexpr int64_t kSumLanes = 16;
constexpr int kSumParts = int(kSumLanes / kLanes);
struct vsum {
  vf part[kSumParts];
};
inline vsum vsum_zero() {
  vsum a;
  for (vf& p : a.part) p = vzero();
  return a;
}
inline vsum vsum_add(vsum a, const vsum& b) {
  for (int q = 0; q < kSumParts; ++q) a.part[q] = vadd(a.part[q], b.part[q]);
  return a;
}
// The 16 lanes added in AVX-512's order: halves first (lane i with lane i + 8), then within a
// vector by hsum(vf), which continues the same tree.
inline float hsum(vsum a) {
  for (int h = kSumParts / 2; h >= 1; h /= 2)
    for (int q = 0; q < h; ++q) a.part[q] = vadd(a.part[q], a.part[q + h]);
  return hsum(a.part[0]);
}
// The mask of lanes [lo, n) within one vector starting at lo (empty when n <= lo).
inline vmask lanes_from(int64_t lo, int64_t n) { return lanes(n <= lo ? 0 : n - lo >= kLanes ? kLanes : n - lo); }

// A sum over i in [0, n) in two 16-lane accumulators (independent chains) and one horizontal sum
// at the end: step(acc, i) adds lanes [i, i + kLanes) into the vector acc, tail(i) is the float
// term of a leftover i (past the last whole 16 lanes, at every width).
template <typename Step, typename Tail>
inline float accumulate(int64_t n, Step step, Tail tail) {
  int64_t i = 0;
  vsum acc0 = vsum_zero(), acc1 = vsum_zero();
  for (; i + 2 * kSumLanes <= n; i += 2 * kSumLanes)
    for (int q = 0; q < kSumParts; ++q) {
      acc0.part[q] = step(acc0.part[q], i + q * kLanes);
      acc1.part[q] = step(acc1.part[q], i + kSumLanes + q * kLanes);
    }
  for (; i + kSumLanes <= n; i += kSumLanes)
    for (int q = 0; q < kSumParts; ++q) acc0.part[q] = step(acc0.part[q], i + q * kLanes);
  float s = hsum(vsum_add(acc0, acc1));
  for (; i < n; ++i) s += tail(i);
  return s;
}

// a . b over n floats: whole 16-lane blocks in two accumulators, the last partial block masked
// into the second, one horizontal sum.
inline float dot(const float* a, const float* b, int64_t n) {
  int64_t i = 0;
  vsum acc0 = vsum_zero(), acc1 = vsum_zero();
  for (; i + 2 * kSumLanes <= n; i += 2 * kSumLanes)
    for (int q = 0; q < kSumParts; ++q) {
      const int64_t j = i + q * kLanes, k = j + kSumLanes;
      acc0.part[q] = vfma(vload(a + j), vload(b + j), acc0.part[q]);
      acc1.part[q] = vfma(vload(a + k), vload(b + k), acc1.part[q]);
    }
  for (; i + kSumLanes <= n; i += kSumLanes)
    for (int q = 0; q < kSumParts; ++q)
      acc0.part[q] = vfma(vload(a + i + q * kLanes), vload(b + i + q * kLanes), acc0.part[q]);
  if (i < n)
    for (int q = 0; q < kSumParts; ++q) {
      const int64_t j = i + q * kLanes;
      const vmask m = lanes_from(j, n);
      acc1.part[q] = vfma(vload_part(a + j, m), vload_part(b + j, m), acc1.part[q]);
    }
  return hsum(vsum_add(acc0, acc1));
}

// Sum of terms over i in [0, n): vec_term(i) the vector of lanes [i, i + kLanes), scalar_term(i)
// one leftover term.
template <typename VecF, typename ScalarF>
inline float reduce(int64_t n, VecF vec_term, ScalarF scalar_term) {
  return accumulate(n, [&](vf acc, int64_t i) { return vadd(acc, vec_term(i)); }, scalar_term);
}

// y += a x over n floats. Inline for the rows of one attention head (cpu::axpy is a call that
// opens an OpenMP region, even a one-thread one, which would cost more than these 64 floats).
inline void add_scaled(float* y, float a, const float* x, int64_t n) {
  int64_t i = 0;
  const vf va = vset1(a);
  for (; i + kLanes <= n; i += kLanes) vstore(y + i, vfma(va, vload(x + i), vload(y + i)));
  if (i < n) {
    const vmask m = lanes(n - i);
    vstore_part(y + i, vfma(va, vload_part(x + i, m), vload_part(y + i, m)), m);
  }
}

// One vector of an element-wise pass: lanes [i, i + kLanes), or the last, partial one (masked).
struct Lanes {
  int64_t i;
  bool part;
  vmask m;
  vf load(const float* p) const { return part ? vload_part(p + i, m) : vload(p + i); }
  void store(float* p, vf v) const {
    if (part) vstore_part(p + i, v, m);
    else vstore(p + i, v);
  }
};
// body(Lanes) for every vector of [0, n), the partial one last: every element goes through the
// same vector code at every width.
template <typename Body>
inline void each_vector(int64_t n, Body body) {
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) body(Lanes{i, false, lanes(kLanes)});
  if (i < n) body(Lanes{i, true, lanes(n - i)});
}

// exp(x) in every lane to about 1 ulp, the same operations at every width: exp(x) = 2^n e^r with
// n = round(x / ln 2) and r = x - n ln 2 (in two parts, exact), e^r by Cephes' expf polynomial.
// Below about -87.7 (and at -inf) the result is 0; above 88.37 it saturates at 2.4e38; NaN stays NaN.
inline vf vexp(vf x) {
  x = vmin(vset1(88.37626f), vmax(vset1(-88.0f), x));  // the NaN operand second: it passes
  const vf n = vround(vmul(x, vset1(1.44269504088896341f)));
  vf r = vfma(n, vset1(-0.693359375f), x);  // ln 2's leading bits: n times it is exact
  r = vfma(n, vset1(2.12194440e-4f), r);
  vf p = vset1(1.9875691500e-4f);
  p = vfma(p, r, vset1(1.3981999507e-3f));
  p = vfma(p, r, vset1(8.3334519073e-3f));
  p = vfma(p, r, vset1(4.1665795894e-2f));
  p = vfma(p, r, vset1(1.6666665459e-1f));
  p = vfma(p, r, vset1(5.0000001201e-1f));
  p = vfma(p, vmul(r, r), vadd(r, vset1(1.f)));  // 1 + r + r^2 P(r)
  return vmul(p, vpow2(n));
}

// erf(x) in every lane within a few ulp: the odd/even rational fit on [-4, 4] that Eigen uses
// (generic_fast_erf_float; outside it erf rounds to +-1 in float).
inline vf verf(vf x) {
  x = vmin(vset1(4.f), vmax(vset1(-4.f), x));
  const vf x2 = vmul(x, x);
  vf p = vset1(-2.72614225801306e-10f);
  p = vfma(x2, p, vset1(2.77068142495902e-08f));
  p = vfma(x2, p, vset1(-2.10102402082508e-06f));
  p = vfma(x2, p, vset1(-5.69250639462346e-05f));
  p = vfma(x2, p, vset1(-7.34990630326855e-04f));
  p = vfma(x2, p, vset1(-2.95459980854025e-03f));
  p = vfma(x2, p, vset1(-1.60960333262415e-02f));
  vf q = vset1(-1.45660718464996e-05f);
  q = vfma(x2, q, vset1(-2.13374055278905e-04f));
  q = vfma(x2, q, vset1(-1.68282697438203e-03f));
  q = vfma(x2, q, vset1(-7.37332916720468e-03f));
  q = vfma(x2, q, vset1(-1.42647390514189e-02f));
  return vdiv(vmul(x, p), q);
}

}  // namespace fbt::cpu::simd
