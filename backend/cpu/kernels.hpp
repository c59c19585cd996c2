// CPU kernels on raw pointers: no Tensor, no tape. Each forward has its backward beside it.
// Backward kernels ACCUMULATE (+=) into their gradient outputs; a null gradient pointer means
// "not needed" and is skipped. Shapes in comments use the legend of autograd/tensor.hpp.
#pragma once
#include <cstdint>
#include <string>

#include "backend/kernel_types.hpp"

namespace fbt::cpu {

// y = x W^T + b.   x:(N,In)  W:(Out,In)  b:(Out) or null  y:(N,Out)  (y overwritten)
void linear_forward(float* y, const float* x, const float* W, const float* b, int64_t N, int64_t In, int64_t Out);
void linear_backward(float* dx, float* dW, float* db, const float* dy, const float* x, const float* W,
                     int64_t N, int64_t In, int64_t Out);
// Products of at most kSkinnyRows rows take the few-row kernels on W; with packed weights, those
// of at most kPackedRows read the packs (faster than the GEMM library up to there: a window of
// a few hundred rows reuses each panel from cache).
constexpr int64_t kSkinnyRows = 64;
constexpr int64_t kPackedRows = 512;
// The same products with W also packed for few rows (see pack_panels): Wp_fwd packs W^T,
// Wp_bwd packs W; a null pack, or many rows, takes the plain path above.
void linear_forward_packed(float* y, const float* x, const float* W, const float* Wp_fwd, const float* b, int64_t N,
                           int64_t In, int64_t Out);
void linear_backward_input_packed(float* dx, const float* dy, const float* W, const float* Wp_bwd, int64_t N,
                                  int64_t In, int64_t Out, bool accumulate = true);
// The three parts of linear_backward: dx += dy W, dW += dy^T x, db += column sums of dy.
// dx (+)= dy W: accumulate false overwrites dx.
void linear_backward_input(float* dx, const float* dy, const float* W, int64_t N, int64_t In, int64_t Out,
                           bool accumulate = true);
void linear_backward_weight(float* dW, const float* dy, const float* x, int64_t N, int64_t In, int64_t Out);
void bias_backward(float* db, const float* dy, int64_t N, int64_t Out);
// The weight and bias gradients over rows held in several parts (the time steps of a sweep),
// dW += sum_k dy_k^T x_k and db += column sums of every dy_k, each part's rows in order: the
// same floats as one call on the parts' rows stacked, without stacking them. db may be null.
struct RowPart {
  const float *dy, *x;
  int64_t rows;
};
void linear_backward_weight_parts(float* dW, float* db, const RowPart* parts, int nparts, int64_t In, int64_t Out);
void bias_backward_parts(float* db, const RowPart* parts, int nparts, int64_t Out);  // x unused

// ---- weights packed for the products of one time step ----
// A time step multiplies a few rows (batch x window) by every weight, forward and backward, so
// those products stream the weights. Packed as column panels whose rows are contiguous, a
// weight streams in order and each vector loaded meets up to 16 rows (ParamStore::freeze).
// A:(K,M) with element (k,m) at src[k*ks + m*ms] -> dst:(ceil(M/kPanel), K, kPanel), zero-padded.
// (The layout's definition, and how gemm packs its B operand; pack_weight is what a step uses.)
int64_t packed_floats(int64_t K, int64_t M);
// panel_stride: floats from one panel to the next (0: K kPanel), to pack K rows into a part of
// taller panels.
void pack_panels(float* dst, const float* src, int64_t K, int64_t M, int64_t ks, int64_t ms, int64_t panel_stride = 0);
// Both packs of a weight W:(Out, In) in one pass over it, as pack_panels(fwd, W, In, Out, 1, In)
// (W^T, the forward's) and pack_panels(bwd, W, Out, In, In, 1) (W, the input gradient's) write
// them; streamed past the caches where both are vector-aligned (they are read in the next step).
void pack_weight(float* fwd, float* bwd, const float* W, int64_t Out, int64_t In);
// y = x A + bias (accumulate: y += x A; no bias).  x:(N,K)  A: packed (K,M)  bias:(M) or null  y:(N,M)
void packed_product(float* y, const float* x, const float* A, int64_t N, int64_t K, int64_t M, bool accumulate,
                    const float* bias = nullptr);

// ---- the general product: fbt's own kernels, at the machine's rate whatever CPU a BLAS knows ----
// A matrix operand by strides: element (i, j) at data[i * rs + j * cs] (a transpose swaps them).
struct MatrixView {
  const float* data;
  int64_t rs, cs;
};
// C (+)= A B.  A:(M,K)  B:(K,N)  C:(M,N) row-major, leading dimension ldc. Every element of C is
// one chain of FMAs over k in order, from C's value (accumulate) or 0: a product split into
// consecutive calls over k (a weight gradient taken a window of rows at a time) gives the same
// floats as one call, for any thread count. The large products of linear_* run here.
// init (N floats, or null): without accumulate, every row of C starts from it (a bias) instead of 0.
void gemm(float* C, int64_t ldc, MatrixView A, MatrixView B, int64_t M, int64_t N, int64_t K, bool accumulate,
          const float* init = nullptr);
// The same product with k in parts: part i contributes A_i:(M,K_i) B_i:(K_i,N), in order, as if
// the A_i were side by side and the B_i stacked (the same floats; nothing is copied to do it).
struct GemmPart {
  MatrixView A, B;
  int64_t K;
};
void gemm_parts(float* C, int64_t ldc, const GemmPart* parts, int nparts, int64_t M, int64_t N, bool accumulate,
                const float* init = nullptr);
// The kernels gemm runs, in words (the instruction set compiled for, the register block): fbt bench.
std::string gemm_kernel();

// Elementwise over n values.
void add_forward(float* y, const float* a, const float* b, int64_t n);
void mul_forward(float* y, const float* a, const float* b, int64_t n);
void mul_backward(float* da, float* db, const float* dy, const float* a, const float* b, int64_t n);
void scale_forward(float* y, const float* x, float s, int64_t n);
void axpy(float* y, float s, const float* x, int64_t n);  // y += s x
// dst[r*dst_stride + c] += src[r*src_stride + c] for rows x cols (slice and concat gradients).
void add_rows(float* dst, int64_t dst_stride, const float* src, int64_t src_stride, int64_t rows, int64_t cols);
// Row r of x:(N,C) times keep[r] in {0,1}: y overwritten, dx accumulated.
void mask_rows_forward(float* y, const float* x, const uint8_t* keep, int64_t N, int64_t C);
void mask_rows_backward(float* dx, const float* dy, const uint8_t* keep, int64_t N, int64_t C);

// Layer norm over the last axis, eps 1e-5, biased variance.  x,y:(N,C)  w,b:(C)  mean,rstd:(N)
void layernorm_forward(float* y, float* mean, float* rstd, const float* x, const float* w, const float* b,
                       int64_t N, int64_t C);
// The input and parameter halves of the backward are separate because the memory projection
// feeds them different upstream gradients (see project_memory in ops/attention.cpp).
void layernorm_backward_input(float* dx, const float* dy, const float* x, const float* w, const float* mean,
                              const float* rstd, int64_t N, int64_t C, bool accumulate = true);
void layernorm_backward_params(float* dw, float* db, const float* dy, const float* x, const float* mean,
                               const float* rstd, int64_t N, int64_t C);
// xhat = (x - mean) * rstd, the normalized rows before the norm's weight and bias.
void layernorm_xhat(float* xhat, const float* x, const float* mean, const float* rstd, int64_t N, int64_t C);
// The gradients that y = layernorm(x) P^T (P: kv x D) sends to the norm's weight w and bias b
// from rows whose x is a constant, given M = g^T xhat (kv x D) and colsum (kv), the column sums
// of the rows' gradient g: dw += colsum(P o M), db += P^T colsum. The same sums as through
// dxhat = g P, without that product.
void constant_rows_projection_backward(float* dw, float* db, const float* M, const float* colsum, const float* P,
                                       int64_t KV, int64_t D);
// Rows [row, row + n) of a key/value cache's two gradients, gd and gc (B, R, KV; either may be
// null: no reader wrote it), gathered per batch row: g_diff = gd (zeros when null) and, when gc
// is given, g_all = gd + gc. Returns whether any gc value of these rows is nonzero (whether a
// reader held them constant).  g_diff, g_all: (B, n*KV)
bool gather_cache_grads(float* g_diff, float* g_all, const float* gd, const float* gc, int64_t B, int64_t R, int64_t KV,
                        int64_t row, int64_t n);

// GEGLU with the exact GELU, x * Phi(x): y = u[:, :F] * gelu(u[:, F:]).   u:(N,2F)  y:(N,F)
void geglu_forward(float* y, const float* u, int64_t N, int64_t F);
// du (+)= ...: accumulate false overwrites du (as for every "accumulate" flag of this file).
void geglu_backward(float* du, const float* dy, const float* u, int64_t N, int64_t F, bool accumulate = true);

// Embedding gather.  W:(V,D)  ids:(N)  y:(N,D).
void embedding_forward(float* y, const float* W, const int32_t* ids, int64_t N, int64_t D);
// dW += the rows of dy, grouped by token (group_by_token, kernel_types.hpp): token tokens[u] gets
// rows[starts[u] .. starts[u+1]) in that order (the floats of a scatter-add in row order).
void embedding_backward(float* dW, const float* dy, const int32_t* rows, const int32_t* tokens, const int32_t* starts,
                        int64_t U, int64_t D);

// Softmax cross-entropy fused with the logits.  logits:(N,V)  targets:(N)  lse:(N) saved.
// A row whose target is negative has no loss and no gradient. loss[0] = the mean of the rows'
// losses over the `counted` rows with a target (0 when counted is 0), summed in row order in
// double: the same float for any thread count.
void cross_entropy_forward(float* loss, float* lse, const float* logits, const int32_t* targets, int64_t N, int64_t V,
                           int64_t counted);
// dlogits += (g[0] / counted) * (softmax(logits) - onehot(target)) on the rows with a target.
void cross_entropy_backward(float* dlogits, const float* g, int64_t counted, const float* logits, const float* lse,
                            const int32_t* targets, int64_t N, int64_t V);

// y = sum_k a_k xs[k], a = softmax(w).  w:(K)  xs: K pointers to n values each  a:(K) saved.
void weighted_sum_forward(float* y, float* a, const float* w, const float* const* xs, int64_t K, int64_t n);
void weighted_sum_backward(float* const* dxs, float* dw, const float* dy, const float* a, const float* const* xs,
                           int64_t K, int64_t n);

// Inverted dropout: mask[i] = 0 or 1/(1-p) from the counter-based generator; y = x * mask.
void dropout_mask(float* mask, float p, uint64_t seed, uint64_t counter, int64_t n);

// Sums in double, in an order fixed for any thread count: a . b, and x . x (global grad norm).
double dot_double(const float* a, const float* b, int64_t n);
double sum_squares(const float* x, int64_t n);

// One AdamW update over n values (t counts from 1); decay: per-element 0/1 flags (decoupled weight
// decay where 1); the gradients are multiplied by grad_scale as they are read (clipping).
void adamw_step(float* w, float* m, float* v, const float* g, const uint8_t* decay, int64_t n, double lr, double beta1,
                double beta2, double eps, double weight_decay, int64_t t, float grad_scale = 1.f);

// ---- attention of a window of queries over key/value rows (backend/cpu/attention.cpp; KVRows,
// AttentionDims, AttentionGradPart: kernel_types.hpp) ----
// Rows [r0, r1) of a key/value cache (B, R, 2I) into its head-major mirror (B, H, 2, R, Dh):
// element (b, h, kv, r, c) at heads[(((b * H + h) * 2 + kv) * R + r) * Dh + c], kv 0 the key.
void mirror_kv_heads(float* heads, const float* cache, int64_t B, int64_t R, int64_t H, int64_t Dh, int64_t r0,
                     int64_t r1);
// q:(B,n,I), already scaled.  bucket:(n,S) int32: -1 = key invisible to the query, else the
// position-bias bucket (any >= 0 with bias == null).  bias:(NB,H) or null.
// probs:(B,H,S,n) saved softmax, key-major (zeros where invisible): the layout the window's
// products read without transposing; with one query it is (B,H,n,S) too.
// drop:(B,H,S,n) dropout multipliers or null.
// out:(B,n,I); a query with no visible key gets zeros.
// span (adaptive attention span, kernel_types.hpp): probs are then the masked, renormalized
// weights, span.raw the softmax before the mask, and the backward adds to span.dz.
void attention_forward(float* out, float* probs, const float* q, const KVRows* segs, int nsegs,
                       const int32_t* bucket, const float* bias, const float* drop, const AttentionDims& d,
                       const AttentionSpan& span = {});
// dlogits:(B,H,S,n) scratch, left holding d(logits). dq:(B,n,I) or null; dbias:(NB,H) or null;
// key/value gradients into segs[k].grad (a segment without one gets none).
void attention_backward(float* dq, float* dbias, float* dlogits, const float* dout, const float* q,
                        const KVRows* segs, int nsegs, const int32_t* bucket, const float* probs,
                        const float* drop, const AttentionDims& d, const AttentionSpan& span = {});
// The key/value gradient of the first keys (segs: keys [0, M) of every part's S) summed over
// several calls that read them alike, then added to the segments' gradient rows once:
// dV += sum_m W_m^T dO_m, dK += sum_m dL_m^T Q_m (W = probs times the dropout multipliers).
void attention_kv_grad_sum(const KVRows* segs, int nsegs, const AttentionGradPart* parts, int nparts,
                           const AttentionDims& d);
// Adds the deferred shares of single-query calls (kernel_types.hpp) to cache rows [r0, r1), part
// after part in the order given: for each key row the same additions, in the same order, as
// attention_backward makes at once (dV += w dO where w != 0, dK += dL q where the key is live), so
// the same floats. H heads of Dh: I = H Dh.
void add_deferred_kv_grads(const DeferredKVPart* parts, int nparts, int64_t B, int64_t H, int64_t Dh, int64_t r0,
                           int64_t r1);

}  // namespace fbt::cpu
