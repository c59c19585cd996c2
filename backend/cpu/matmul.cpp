// CPU matrix products: our own register-blocked kernels (no BLAS): the few-row products of a
// time step on the weights or their packed panels, and the general product (gemm) the rest take.
// Every output is one sum in a fixed order, and threads split outputs, never a sum, so results
// are bit-identical for any thread count.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include <omp.h>

#include "backend/cpu/kernels.hpp"
#include "backend/cpu/parallel.hpp"
#include "backend/cpu/simd.hpp"

namespace fbt::cpu {

namespace {

using namespace simd;

// Few rows (one time step of a sequential model, up to kSkinnyRows) on W itself: stream W once,
// each of its rows meeting every x row while in L1. A general GEMM would pack all of W first, which
// costs as much as the product. Register-blocked with AVX-512 or AVX2/FMA where the compiler
// targets it; plain loops otherwise.

// y[r, o] = x[r] . W[o] for o in [o0, o1), all N rows: kDotRows weight rows x 2 input rows of
// 16-lane sums in registers (4 with AVX-512's 32 registers, 2 with AVX2's 16). Every output is
// the same sum, however it is blocked: one 16-lane accumulator over the whole 16-lane blocks of
// In, its horizontal sum, then the leftover terms in order; so at every vector width.
#if defined(__AVX512F__)
constexpr int kDotRows = 4;
#else
constexpr int kDotRows = 2;
#endif
void skinny_dots(float* y, const float* x, const float* W, int64_t N, int64_t In, int64_t Out, int64_t o0, int64_t o1) {
  const int64_t InV = In / kSumLanes * kSumLanes;
  auto finish = [&](const vsum& acc, const float* xr, const float* w) {
    float s = hsum(acc);
    for (int64_t i = InV; i < In; ++i) s += xr[i] * w[i];
    return s;
  };
  auto one = [&](const float* xr, const float* w) {
    vsum a = vsum_zero();
    for (int64_t i = 0; i < InV; i += kSumLanes)
      for (int q = 0; q < kSumParts; ++q) a.part[q] = vfma(vload(xr + i + q * kLanes), vload(w + i + q * kLanes), a.part[q]);
    return finish(a, xr, w);
  };
  int64_t o = o0;
  for (; o + kDotRows <= o1; o += kDotRows) {
    const float* w0 = W + o * In;
    int64_t r = 0;
    for (; r + 2 <= N; r += 2) {
      const float *xa = x + r * In, *xb = xa + In;
      vsum a[kDotRows], b[kDotRows];
      for (int k = 0; k < kDotRows; ++k) a[k] = b[k] = vsum_zero();
      for (int64_t i = 0; i < InV; i += kSumLanes)
        for (int q = 0; q < kSumParts; ++q) {
          const int64_t j = i + q * kLanes;
          const vf va = vload(xa + j), vb = vload(xb + j);
          for (int k = 0; k < kDotRows; ++k) {
            const vf w = vload(w0 + k * In + j);
            a[k].part[q] = vfma(va, w, a[k].part[q]);
            b[k].part[q] = vfma(vb, w, b[k].part[q]);
          }
        }
      for (int k = 0; k < kDotRows; ++k) {
        y[r * Out + o + k] = finish(a[k], xa, w0 + k * In);
        y[(r + 1) * Out + o + k] = finish(b[k], xb, w0 + k * In);
      }
    }
    for (; r < N; ++r)
      for (int k = 0; k < kDotRows; ++k) y[r * Out + o + k] = one(x + r * In, w0 + k * In);
  }
  for (; o < o1; ++o)
    for (int64_t r = 0; r < N; ++r) y[r * Out + o] = one(x + r * In, W + o * In);
}

// dx[r, c0:c1] += sum_o dy[r, o] W[o, c0:c1] for all N rows (outer-product form): blocks of
// 8 rows x 2 vectors of columns live in registers while W streams through.
void skinny_axpys(float* dx, const float* dy, const float* W, int64_t N, int64_t In, int64_t Out, int64_t c0, int64_t c1) {
  int64_t c = c0;
#ifdef FBT_SIMD
  constexpr int R = 8;
  constexpr int64_t C2 = 2 * kLanes;
  for (; c + C2 <= c1; c += C2) {
    int64_t r = 0;
    for (; r + R <= N; r += R) {
      vf acc[R][2];
      for (int k = 0; k < R; ++k) acc[k][0] = acc[k][1] = vzero();
      for (int64_t o = 0; o < Out; ++o) {
        const vf w0 = vload(W + o * In + c), w1 = vload(W + o * In + c + kLanes);
        for (int k = 0; k < R; ++k) {
          const vf g = vbroadcast(dy + (r + k) * Out + o);
          acc[k][0] = vfma(g, w0, acc[k][0]);
          acc[k][1] = vfma(g, w1, acc[k][1]);
        }
      }
      for (int k = 0; k < R; ++k) {
        float* d = dx + (r + k) * In + c;
        vstore(d, vadd(vload(d), acc[k][0]));
        vstore(d + kLanes, vadd(vload(d + kLanes), acc[k][1]));
      }
    }
    for (; r < N; ++r) {
      vf a0 = vzero(), a1 = a0;
      for (int64_t o = 0; o < Out; ++o) {
        const vf g = vbroadcast(dy + r * Out + o);
        a0 = vfma(g, vload(W + o * In + c), a0);
        a1 = vfma(g, vload(W + o * In + c + kLanes), a1);
      }
      float* d = dx + r * In + c;
      vstore(d, vadd(vload(d), a0));
      vstore(d + kLanes, vadd(vload(d + kLanes), a1));
    }
  }
#endif
  for (; c < c1; ++c)
    for (int64_t r = 0; r < N; ++r) {
      float s = 0.f;
      for (int64_t o = 0; o < Out; ++o) s += dy[r * Out + o] * W[o * In + c];
      dx[r * In + c] += s;
    }
}

}  // namespace

void linear_forward(float* y, const float* x, const float* W, const float* b, int64_t N, int64_t In, int64_t Out) {
  if (N <= kSkinnyRows) {
    split_threads(Out, 4, In * Out > (1 << 15), [&](int64_t o0, int64_t o1) { skinny_dots(y, x, W, N, In, Out, o0, o1); });
    if (b)
      for (int64_t r = 0; r < N; ++r)
        for (int64_t o = 0; o < Out; ++o) y[r * Out + o] += b[o];
    return;
  }
  gemm(y, Out, {x, In, 1}, {W, 1, In}, N, Out, In, /*accumulate=*/false, b);  // x W^T, the sums from the bias
}

void linear_backward_input(float* dx, const float* dy, const float* W, int64_t N, int64_t In, int64_t Out,
                           bool accumulate) {
  if (N <= kSkinnyRows) {
    if (!accumulate) std::memset(dx, 0, sizeof(float) * size_t(N * In));  // few rows: the kernel adds
    split_threads(In, 32, In * Out > (1 << 15), [&](int64_t c0, int64_t c1) { skinny_axpys(dx, dy, W, N, In, Out, c0, c1); });
    return;
  }
  gemm(dx, In, {dy, Out, 1}, {W, In, 1}, N, In, Out, accumulate);  // dy W
}

// ---- packed panels ----

namespace {
#ifdef FBT_SIMD
constexpr int64_t kPanel = kLanes;
#else
constexpr int64_t kPanel = 8;
#endif
// Rows per register block: 16 accumulators of 16 lanes with AVX-512 (32 registers), 12 of 8
// with AVX2 (16 registers), so each panel vector loaded meets that many rows.
#if defined(__AVX512F__)
constexpr int kRowBlock = 16;
#else
constexpr int kRowBlock = 12;
#endif
constexpr int64_t kPrefetch = 32;  // panel rows ahead: a new panel starts before the prefetchers learn it
// K is taken in chunks of x rows copied at a padded stride (see packed_product).
constexpr int64_t kChunk = 512;
constexpr int64_t kChunkStride = kChunk + 16;

// Where row r's element k of a register block's left operand is: x[r * ld + k] (rows k-contiguous,
// KMajor false), or x[k * ld + r] (KMajor: the rows of each k contiguous, as gemm packs a
// transposed operand). Which one changes where values are read, never a sum.
template <bool KMajor>
inline const float* element(const float* x, int64_t ld, int r, int64_t k) {
  return KMajor ? x + k * ld + r : x + r * ld + k;
}
template <bool KMajor>
inline const float* row_at(const float* x, int64_t ld, int64_t r) {
  return KMajor ? x + r : x + r * ld;
}

// y[0:R, 0:width] (+)= x[0:R] P, P one panel (K, kPanel). Each sum is one chain of FMAs over k in
// order, starting from y's value (acc), else from init[0:kPanel] (a bias) or 0: a product split
// into consecutive calls over k gives the same floats as one call (see gemm).
template <int R, bool KMajor = false>
void panel_block(float* y, int64_t ldy, const float* x, int64_t ldx, const float* P, int64_t K, int64_t width, bool acc,
                 const float* init) {
#ifdef FBT_SIMD
  vf a[R];
  for (int r = 0; r < R; ++r) {
    if (!acc) {
      a[r] = init ? vload(init) : vzero();
    } else if (width == kPanel) {
      a[r] = vload(y + r * ldy);
    } else {
      alignas(64) float t[kPanel] = {};
      for (int64_t c = 0; c < width; ++c) t[c] = y[r * ldy + c];
      a[r] = vload(t);
    }
  }
  for (int64_t k = 0; k < K; ++k) {
    _mm_prefetch(reinterpret_cast<const char*>(P + (k + kPrefetch) * kPanel), _MM_HINT_T0);
    const vf w = vload(P + k * kPanel);
    for (int r = 0; r < R; ++r) a[r] = vfma(vbroadcast(element<KMajor>(x, ldx, r, k)), w, a[r]);
  }
  for (int r = 0; r < R; ++r) {
    float* yr = y + r * ldy;
    if (width == kPanel) {
      vstore(yr, a[r]);
    } else {
      alignas(64) float t[kPanel];
      vstore(t, a[r]);
      for (int64_t c = 0; c < width; ++c) yr[c] = t[c];
    }
  }
#else
  for (int r = 0; r < R; ++r)
    for (int64_t c = 0; c < width; ++c) {
      float s = acc ? y[r * ldy + c] : init ? init[c] : 0.f;
      for (int64_t k = 0; k < K; ++k) s = std::fma(*element<KMajor>(x, ldx, r, k), P[k * kPanel + c], s);
      y[r * ldy + c] = s;
    }
#endif
}

// One row against 4 full panels (P, P + stride, ...): a single row against one panel would wait
// on one chain of dependent FMAs; four panels give four chains. Every output is summed in the
// same k order as in panel_block, so results do not depend on how rows or panels are grouped.
void row_four_panels(float* y, const float* x, const float* P, int64_t stride, int64_t K, bool acc, const float* init) {
#ifdef FBT_SIMD
  const float* start = acc ? y : init;  // the chains start from y, the bias, or 0 (as panel_block's)
  vf a0 = vzero(), a1 = vzero(), a2 = vzero(), a3 = vzero();
  if (start) a0 = vload(start), a1 = vload(start + kPanel), a2 = vload(start + 2 * kPanel), a3 = vload(start + 3 * kPanel);
  for (int64_t k = 0; k < K; ++k) {
    const vf xk = vbroadcast(x + k);
    a0 = vfma(xk, vload(P + k * kPanel), a0);
    a1 = vfma(xk, vload(P + stride + k * kPanel), a1);
    a2 = vfma(xk, vload(P + 2 * stride + k * kPanel), a2);
    a3 = vfma(xk, vload(P + 3 * stride + k * kPanel), a3);
  }
  const vf a[4] = {a0, a1, a2, a3};
  for (int q = 0; q < 4; ++q) vstore(y + q * kPanel, a[q]);
#else
  for (int q = 0; q < 4; ++q) panel_block<1>(y + q * kPanel, 0, x, 0, P + q * stride, K, kPanel, acc, init ? init + q * kPanel : nullptr);
#endif
}

// All N rows against one panel: full blocks, then the rest in smaller ones.
template <bool KMajor = false>
void panel_rows(float* y, int64_t ldy, const float* x, int64_t ldx, const float* P, int64_t N, int64_t K,
                int64_t width, bool acc, const float* init) {
  int64_t r = 0;
  auto xr = [&] { return row_at<KMajor>(x, ldx, r); };
  for (; r + kRowBlock <= N; r += kRowBlock)
    panel_block<kRowBlock, KMajor>(y + r * ldy, ldy, xr(), ldx, P, K, width, acc, init);
  for (; r + 8 <= N; r += 8) panel_block<8, KMajor>(y + r * ldy, ldy, xr(), ldx, P, K, width, acc, init);
  for (; r + 4 <= N; r += 4) panel_block<4, KMajor>(y + r * ldy, ldy, xr(), ldx, P, K, width, acc, init);
  for (; r < N; ++r) panel_block<1, KMajor>(y + r * ldy, ldy, xr(), ldx, P, K, width, acc, init);
}

#ifdef FBT_SIMD
// Two full panels side by side (P0 and P1, columns [0, 2 kPanel) of y): each row's broadcast
// meets two panel vectors, half panel_block's loads per FMA. The same chains as panel_block's.
#if defined(__AVX512F__)
constexpr int kRowBlock2 = 12;  // 24 accumulators of the 32 registers
#else
constexpr int kRowBlock2 = 6;   // 12 of 16
#endif
template <int R, bool KMajor = false>
void panel_pair_block(float* y, int64_t ldy, const float* x, int64_t ldx, const float* P0, const float* P1, int64_t K,
                      bool acc, const float* init) {
  vf a[R][2];
  for (int r = 0; r < R; ++r) {
    const float* start = acc ? y + r * ldy : init;
    a[r][0] = start ? vload(start) : vzero();
    a[r][1] = start ? vload(start + kPanel) : vzero();
  }
  for (int64_t k = 0; k < K; ++k) {
    _mm_prefetch(reinterpret_cast<const char*>(P0 + (k + kPrefetch) * kPanel), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(P1 + (k + kPrefetch) * kPanel), _MM_HINT_T0);
    const vf w0 = vload(P0 + k * kPanel), w1 = vload(P1 + k * kPanel);
    for (int r = 0; r < R; ++r) {
      const vf xr = vbroadcast(element<KMajor>(x, ldx, r, k));
      a[r][0] = vfma(xr, w0, a[r][0]);
      a[r][1] = vfma(xr, w1, a[r][1]);
    }
  }
  for (int r = 0; r < R; ++r) {
    vstore(y + r * ldy, a[r][0]);
    vstore(y + r * ldy + kPanel, a[r][1]);
  }
}
#endif

// All N rows against two full panels (the columns [0, 2 kPanel) of y).
template <bool KMajor = false>
void panel_pair_rows(float* y, int64_t ldy, const float* x, int64_t ldx, const float* P0, const float* P1, int64_t N,
                     int64_t K, bool acc, const float* init) {
  int64_t r = 0;
#ifdef FBT_SIMD
  for (; r + kRowBlock2 <= N; r += kRowBlock2)
    panel_pair_block<kRowBlock2, KMajor>(y + r * ldy, ldy, row_at<KMajor>(x, ldx, r), ldx, P0, P1, K, acc, init);
#endif
  const float* xr = row_at<KMajor>(x, ldx, r);
  panel_rows<KMajor>(y + r * ldy, ldy, xr, ldx, P0, N - r, K, kPanel, acc, init);
  panel_rows<KMajor>(y + r * ldy + kPanel, ldy, xr, ldx, P1, N - r, K, kPanel, acc, init ? init + kPanel : nullptr);
}
}  // namespace

int64_t packed_floats(int64_t K, int64_t M) { return (M + kPanel - 1) / kPanel * K * kPanel; }

void pack_panels(float* dst, const float* src, int64_t K, int64_t M, int64_t ks, int64_t ms, int64_t panel_stride) {
  const int64_t panels = (M + kPanel - 1) / kPanel;
  for (int64_t p = 0; p < panels; ++p) {
    float* d = dst + p * (panel_stride ? panel_stride : K * kPanel);
    const int64_t m0 = p * kPanel, width = std::min(kPanel, M - m0);
    if (width < kPanel) std::memset(d, 0, sizeof(float) * size_t(K * kPanel));
    if (ms == 1 && width == kPanel) {  // a constant size: the copy is inlined, not a call per panel row
      for (int64_t k = 0; k < K; ++k) std::memcpy(d + k * kPanel, src + k * ks + m0, sizeof(float) * kPanel);
    } else if (ms == 1) {
      for (int64_t k = 0; k < K; ++k) std::memcpy(d + k * kPanel, src + k * ks + m0, sizeof(float) * size_t(width));
    } else {  // columns strided (a transposed operand): read each along k, the contiguous way
      for (int64_t c = 0; c < width; ++c) {
        const float* col = src + (m0 + c) * ms;
        for (int64_t k = 0; k < K; ++k) d[k * kPanel + c] = col[k * ks];
      }
    }
  }
}

void pack_weight(float* fwd, float* bwd, const float* W, int64_t Out, int64_t In) {
  // Row blocks of kPanel rows: one is forward panel p (transposed) and, cut into kPanel-column
  // tiles, rows [p kPanel, ...) of every backward panel; each block is read once, while in L1/L2.
  const int64_t blocks = (Out + kPanel - 1) / kPanel, col_panels = (In + kPanel - 1) / kPanel;
  const bool stream = kPanel == simd::kLanes && reinterpret_cast<uintptr_t>(fwd) % sizeof(simd::vf) == 0 &&
                      reinterpret_cast<uintptr_t>(bwd) % sizeof(simd::vf) == 0;
  auto put = [&](float* d, const float* row) {
    if (stream) simd::vstream(d, simd::vload(row));
    else std::memcpy(d, row, sizeof(float) * kPanel);
  };
#pragma omp parallel for if (Out * In > kParallelMin)
  for (int64_t p = 0; p < blocks; ++p) {
    const int64_t r0 = p * kPanel, rows = std::min(kPanel, Out - r0);
    alignas(64) float tile[kPanel][kPanel];
    for (int64_t q = 0; q < col_panels; ++q) {
      const int64_t c0 = q * kPanel, cols = std::min(kPanel, In - c0);
      for (int64_t r = 0; r < kPanel; ++r)  // tile[r][c] = W[r0 + r, c0 + c], zero outside W
        for (int64_t c = 0; c < kPanel; ++c) tile[r][c] = r < rows && c < cols ? W[(r0 + r) * In + c0 + c] : 0.f;
      for (int64_t r = 0; r < rows; ++r) put(bwd + (q * Out + r0 + r) * kPanel, tile[r]);  // W's rows, as they are
      alignas(64) float column[kPanel];
      for (int64_t c = 0; c < cols; ++c) {  // W^T: forward panel p, row c0 + c
        for (int64_t r = 0; r < kPanel; ++r) column[r] = tile[r][c];
        put(fwd + (p * In + c0 + c) * kPanel, column);
      }
    }
    if (stream) simd::stream_fence();
  }
}

void packed_product(float* y, const float* x, const float* A, int64_t N, int64_t K, int64_t M, bool accumulate,
                    const float* bias) {
  const int64_t panels = (M + kPanel - 1) / kPanel;
  std::vector<float> start;  // the bias, padded to whole panels: what the first chunk's sums start from
  if (bias && !accumulate) {
    start.assign(size_t(panels * kPanel), 0.f);
    std::memcpy(start.data(), bias, sizeof(float) * size_t(M));
  }
  split_threads(panels, 1, N * K * M > (1 << 15), [&](int64_t p0, int64_t p1) {
    // K in chunks whose x rows are copied to a padded stride: rows of x 4 KB apart would share
    // one L1 set, and a block reads 16 of them at once. The chunk stays in L1 across panels.
    thread_local std::vector<float> xc;
    xc.resize(size_t(N * kChunkStride));
    for (int64_t k0 = 0; k0 < K; k0 += kChunk) {
      const int64_t kn = std::min(kChunk, K - k0);
      for (int64_t r = 0; r < N; ++r) std::memcpy(xc.data() + r * kChunkStride, x + r * K + k0, sizeof(float) * size_t(kn));
      const bool acc = accumulate || k0 > 0;
      auto init = [&](int64_t p) { return !acc && !start.empty() ? start.data() + p * kPanel : nullptr; };
      int64_t p = p0;
      if (N < 4)  // a row or three (sampling, a single stream): four panels at a time
        for (; p + 4 <= p1 && (p + 4) * kPanel <= M; p += 4)
          for (int64_t r = 0; r < N; ++r)
            row_four_panels(y + r * M + p * kPanel, xc.data() + r * kChunkStride, A + (p * K + k0) * kPanel, K * kPanel,
                            kn, acc, init(p));
      for (; p + 2 <= p1 && (p + 2) * kPanel <= M; p += 2)
        panel_pair_rows(y + p * kPanel, M, xc.data(), kChunkStride, A + (p * K + k0) * kPanel,
                        A + ((p + 1) * K + k0) * kPanel, N, kn, acc, init(p));
      for (; p < p1; ++p)
        panel_rows(y + p * kPanel, M, xc.data(), kChunkStride, A + (p * K + k0) * kPanel, N, kn,
                   std::min(kPanel, M - p * kPanel), acc, init(p));
    }
  });
}

// ---- the general product ----

namespace {
// Rows of A per block: a block's chunk (192 x kChunk floats, ~400 KB) stays in L2 while the
// thread's panels pass over it.
constexpr int64_t kGemmRows = 192;

// A[m0 + m, k0 + k] into dst[m * kChunkStride + k] for m < mn, k < kn: k contiguous, as
// panel_block broadcasts it.
void pack_rows(float* dst, MatrixView A, int64_t m0, int64_t mn, int64_t k0, int64_t kn) {
  if (A.cs == 1) {
    for (int64_t m = 0; m < mn; ++m)
      std::memcpy(dst + m * kChunkStride, A.data + (m0 + m) * A.rs + k0, sizeof(float) * size_t(kn));
    return;
  }
  for (int64_t k = 0; k < kn; ++k) {  // a transposed operand: read along m, the contiguous way
    const float* src = A.data + (k0 + k) * A.cs + m0 * A.rs;
    for (int64_t m = 0; m < mn; ++m) dst[m * kChunkStride + k] = src[m * A.rs];
  }
}

// A transposed operand (its columns contiguous: a weight gradient's dy^T) is packed k-major
// instead, where reading it is a copy: sub-blocks of kSubRows rows (a register block's), sub-block
// s (height hs) at dst + s kSubRows ktot, its element (k, r) at k hs + r, for the chunk's k in
// [off, off + kn) of ktot.
#ifdef FBT_SIMD
constexpr int64_t kSubRows = kRowBlock2;
#else
constexpr int64_t kSubRows = kRowBlock;
#endif
void pack_rows_kmajor(float* dst, MatrixView A, int64_t m0, int64_t mn, int64_t k0, int64_t kn, int64_t off,
                      int64_t ktot) {
  for (int64_t s0 = 0; s0 < mn; s0 += kSubRows) {
    const int64_t hs = std::min(kSubRows, mn - s0);
    float* d = dst + s0 * ktot + off * hs;
    for (int64_t k = 0; k < kn; ++k) {
      const float* src = A.data + (k0 + k) * A.cs + (m0 + s0) * A.rs;
      if (A.rs == 1 && hs == kSubRows) std::memcpy(d + k * hs, src, sizeof(float) * kSubRows);  // inlined: no call
      else if (A.rs == 1) std::memcpy(d + k * hs, src, sizeof(float) * size_t(hs));
      else
        for (int64_t r = 0; r < hs; ++r) d[k * hs + r] = src[r * A.rs];
    }
  }
}

}  // namespace

std::string gemm_kernel() {
#if defined(__AVX512F__)
  const char* isa = "AVX-512";
#elif defined(FBT_SIMD)
  const char* isa = "AVX2/FMA";
#else
  const char* isa = "scalar";
#endif
#ifdef FBT_SIMD
  const int64_t rows = kRowBlock2, cols = 2 * kPanel;
#else
  const int64_t rows = kRowBlock, cols = kPanel;
#endif
  return std::string("fbt panels, ") + isa + ", " + std::to_string(rows) + " rows x " + std::to_string(cols) +
         " columns";
}

void gemm_parts(float* C, int64_t ldc, const GemmPart* parts, int nparts, int64_t M, int64_t N, bool accumulate,
                const float* init) {
  int64_t K = 0;
  for (int i = 0; i < nparts; ++i) K += parts[i].K;
  if (M <= 0 || N <= 0) return;
  if (accumulate) init = nullptr;
  if (K <= 0) {
    for (int64_t m = 0; m < M && !accumulate; ++m) {
      if (init) std::memcpy(C + m * ldc, init, sizeof(float) * size_t(N));
      else std::memset(C + m * ldc, 0, sizeof(float) * size_t(N));
    }
    return;
  }
  const int64_t panels = (N + kPanel - 1) / kPanel;
  std::vector<float> start;  // init padded to whole panels: what the first chunk's sums start from
  if (init) {
    start.assign(size_t(panels * kPanel), 0.f);
    std::memcpy(start.data(), init, sizeof(float) * size_t(N));
  }
  bool kmajor = true;  // every A transposed: packed k-major (pack_rows_kmajor)
  for (int i = 0; i < nparts; ++i) kmajor = kmajor && parts[i].A.cs != 1;
  // f(part, k within the part, offset in the chunk, rows) for the pieces of parts that make up
  // rows [k0, k0 + kn) of the product's k.
  auto pieces = [&](int64_t k0, int64_t kn, auto f) {
    int64_t at = 0;  // first k of part i
    for (int i = 0; i < nparts && at < k0 + kn; at += parts[i].K, ++i) {
      const int64_t lo = std::max(k0, at), hi = std::min(k0 + kn, at + parts[i].K);
      if (lo < hi) f(parts[i], lo - at, lo - k0, hi - lo);
    }
  };
  // Rows [m0, m1) x panels [p0, p1) of C by one thread, every element one chain over all of k.
  auto body = [&](int64_t m0, int64_t m1, int64_t p0, int64_t p1) {
    thread_local std::vector<float> a_buf, b_buf;
    a_buf.resize(size_t(kGemmRows * kChunkStride));
    b_buf.resize(size_t((p1 - p0) * kChunk * kPanel));
    const int64_t width = std::min(N, p1 * kPanel) - p0 * kPanel;
    for (int64_t k0 = 0; k0 < K; k0 += kChunk) {
      const int64_t kn = std::min(kChunk, K - k0);
      const bool acc = accumulate || k0 > 0;
      // This thread's panels [p0, p1) of B's rows [k0, k0 + kn): panel p at (p - p0) kn kPanel.
      pieces(k0, kn, [&](const GemmPart& pt, int64_t k, int64_t off, int64_t rows) {
        pack_panels(b_buf.data() + off * kPanel, pt.B.data + k * pt.B.rs + p0 * kPanel * pt.B.cs, rows, width, pt.B.rs,
                    pt.B.cs, kn * kPanel);
      });
      for (int64_t r0 = m0; r0 < m1; r0 += kGemmRows) {
        const int64_t rn = std::min(kGemmRows, m1 - r0);
        pieces(k0, kn, [&](const GemmPart& pt, int64_t k, int64_t off, int64_t rows) {
          if (kmajor) pack_rows_kmajor(a_buf.data(), pt.A, r0, rn, k, rows, off, kn);
          else pack_rows(a_buf.data() + off, pt.A, r0, rn, k, rows);
        });
        const float* panel = b_buf.data();  // panel p at panel + (p - p0) kn kPanel
        // Rows [s0, s0 + hs) of the block against panels [p, p + 2) or panel p (width wide).
        auto pair = [&](int64_t p, int64_t s0, int64_t hs) {
          float* c = C + (r0 + s0) * ldc + p * kPanel;
          const float *P0 = panel + (p - p0) * kn * kPanel, *P1 = P0 + kn * kPanel;
          const float* from = acc || start.empty() ? nullptr : start.data() + p * kPanel;
          if (kmajor) panel_pair_rows<true>(c, ldc, a_buf.data() + s0 * kn, hs, P0, P1, hs, kn, acc, from);
          else panel_pair_rows(c, ldc, a_buf.data() + s0 * kChunkStride, kChunkStride, P0, P1, hs, kn, acc, from);
        };
        auto single = [&](int64_t p, int64_t s0, int64_t hs, int64_t cols) {
          float* c = C + (r0 + s0) * ldc + p * kPanel;
          const float* P = panel + (p - p0) * kn * kPanel;
          const float* from = acc || start.empty() ? nullptr : start.data() + p * kPanel;
          if (kmajor) panel_rows<true>(c, ldc, a_buf.data() + s0 * kn, hs, P, hs, kn, cols, acc, from);
          else panel_rows(c, ldc, a_buf.data() + s0 * kChunkStride, kChunkStride, P, hs, kn, cols, acc, from);
        };
        const int64_t sub = kmajor ? kSubRows : rn;  // k-major packs are read a sub-block at a time
        int64_t p = p0;
        for (; p + 2 <= p1 && (p + 2) * kPanel <= N; p += 2)
          for (int64_t s0 = 0; s0 < rn; s0 += sub) pair(p, s0, std::min(sub, rn - s0));
        for (; p < p1; ++p)
          for (int64_t s0 = 0; s0 < rn; s0 += sub) single(p, s0, std::min(sub, rn - s0), std::min(kPanel, N - p * kPanel));
      }
    }
  };
  const bool parallel = M * N * K > (1 << 15);
  // Each thread packs what all of its part reads: all of A when the panels are split among the
  // threads, all of B when the rows are. Split the longer side (as long as every thread gets
  // whole row blocks); either way each element of C is computed whole by one thread, so the
  // thread count changes nothing.
  if (M < N || M < 2 * kRowBlock * int64_t(omp_get_max_threads()))
    split_threads(panels, 1, parallel, [&](int64_t p0, int64_t p1) { body(0, M, p0, p1); });
  else
    split_threads(M, kRowBlock, parallel, [&](int64_t m0, int64_t m1) { body(m0, m1, 0, panels); });
}

void gemm(float* C, int64_t ldc, MatrixView A, MatrixView B, int64_t M, int64_t N, int64_t K, bool accumulate,
          const float* init) {
  const GemmPart whole{A, B, K};
  gemm_parts(C, ldc, &whole, 1, M, N, accumulate, init);
}

void linear_forward_packed(float* y, const float* x, const float* W, const float* Wp_fwd, const float* b, int64_t N,
                           int64_t In, int64_t Out) {
  if (!Wp_fwd || N > kPackedRows) return linear_forward(y, x, W, b, N, In, Out);
  packed_product(y, x, Wp_fwd, N, In, Out, false, b);
}

void linear_backward_input_packed(float* dx, const float* dy, const float* W, const float* Wp_bwd, int64_t N,
                                  int64_t In, int64_t Out, bool accumulate) {
  if (!Wp_bwd || N > kPackedRows) return linear_backward_input(dx, dy, W, N, In, Out, accumulate);
  packed_product(dx, dy, Wp_bwd, N, Out, In, accumulate);
}

void linear_backward_weight(float* dW, const float* dy, const float* x, int64_t N, int64_t In, int64_t Out) {
  gemm(dW, In, {dy, 1, Out}, {x, In, 1}, Out, In, N, /*accumulate=*/true);  // dy^T x
}

void linear_backward_weight_parts(float* dW, float* db, const RowPart* parts, int nparts, int64_t In, int64_t Out) {
  std::vector<GemmPart> g(static_cast<size_t>(nparts));
  for (int i = 0; i < nparts; ++i) g[size_t(i)] = {{parts[i].dy, 1, Out}, {parts[i].x, In, 1}, parts[i].rows};  // dy^T x
  gemm_parts(dW, In, g.data(), nparts, Out, In, /*accumulate=*/true);
  if (db) bias_backward_parts(db, parts, nparts, Out);
}

void bias_backward_parts(float* db, const RowPart* parts, int nparts, int64_t Out) {
  // Rows in a fixed order for every column, part after part (Eigen's colwise sum changes its
  // order with the pointer's alignment); threads own column ranges, so the thread count does not
  // matter.
  int64_t N = 0;
  for (int i = 0; i < nparts; ++i) N += parts[i].rows;
  split_threads(Out, 64, N * Out > kParallelMin, [&](int64_t o0, int64_t o1) {
    for (int i = 0; i < nparts; ++i)
      for (int64_t r = 0; r < parts[i].rows; ++r)
        for (int64_t o = o0; o < o1; ++o) db[o] += parts[i].dy[r * Out + o];
  });
}

void bias_backward(float* db, const float* dy, int64_t N, int64_t Out) {
  const RowPart whole{dy, nullptr, N};
  bias_backward_parts(db, &whole, 1, Out);
}

void linear_backward(float* dx, float* dW, float* db, const float* dy, const float* x, const float* W,
                     int64_t N, int64_t In, int64_t Out) {
  if (dx) linear_backward_input(dx, dy, W, N, In, Out);
  if (dW) linear_backward_weight(dW, dy, x, N, In, Out);
  if (db) bias_backward(db, dy, N, Out);
}

}  // namespace fbt::cpu
