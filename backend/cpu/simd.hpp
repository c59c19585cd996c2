// The widest float vector the compiler targets, for the hand-blocked CPU kernels: 16 lanes with
// AVX-512, 8 with AVX2/FMA. Without either, FBT_SIMD is undefined (register-blocked kernels keep
// plain loops) and vf is a single float, so code written with vf runs either way. Internal to
// ops/cpu.
#pragma once
#include <cstdint>

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
inline vf vfma(vf a, vf b, vf c) { return a * b + c; }
inline vf vadd(vf a, vf b) { return a + b; }
inline vf vsub(vf a, vf b) { return a - b; }
inline vf vmul(vf a, vf b) { return a * b; }
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

// A sum over i in [0, n) with two vector accumulators and one horizontal sum at the end (a
// compiler's simd reduction spills the vector and adds its lanes one by one): step(acc, i) adds
// lanes [i, i + kLanes) into acc, tail(i) is the float term of a leftover i.
template <typename Step, typename Tail>
inline float accumulate(int64_t n, Step step, Tail tail) {
  int64_t i = 0;
  vf acc0 = vzero(), acc1 = vzero();
  for (; i + 2 * kLanes <= n; i += 2 * kLanes) {
    acc0 = step(acc0, i);
    acc1 = step(acc1, i + kLanes);
  }
  for (; i + kLanes <= n; i += kLanes) acc0 = step(acc0, i);
  float s = hsum(vadd(acc0, acc1));
  for (; i < n; ++i) s += tail(i);
  return s;
}

// a . b over n floats: whole vectors in two accumulators, the last partial vector masked into
// the second, one horizontal sum.
inline float dot(const float* a, const float* b, int64_t n) {
  int64_t i = 0;
  vf acc0 = vzero(), acc1 = vzero();
  for (; i + 2 * kLanes <= n; i += 2 * kLanes) {
    acc0 = vfma(vload(a + i), vload(b + i), acc0);
    acc1 = vfma(vload(a + i + kLanes), vload(b + i + kLanes), acc1);
  }
  for (; i + kLanes <= n; i += kLanes) acc0 = vfma(vload(a + i), vload(b + i), acc0);
  if (i < n) {
    const vmask m = lanes(n - i);
    acc1 = vfma(vload_part(a + i, m), vload_part(b + i, m), acc1);
  }
  return hsum(vadd(acc0, acc1));
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

}  // namespace fbt::cpu::simd
