// The types that both kernel families (backend/cpu/kernels.hpp, backend/cuda/kernels.hpp) take,
// so that an op names the two twins of one signature (ops/dispatch.hpp). Shapes in comments use
// the legend of autograd/tensor.hpp.
#pragma once
#include <algorithm>
#include <cstdint>
#include <vector>

#include "backend/host_device.hpp"

namespace fbt {

// ---- attention of a window of queries over key/value rows ----
// A segment of key/value rows: row r of batch b starts at data + b*batch_stride + r*2I; keys are
// columns [0, I), values [I, 2I). grad has the same layout (null: no gradient). On a device all
// of these point into device memory.
// heads (CPU, optional): the same rows head-major, as cpu::mirror_kv_heads writes them, starting
// at the segment's first row of a mirror of heads_rows rows; the window kernels read each head's
// keys and values there in place instead of gathering them from rows 2I apart.
struct KVRows {
  const float* data;
  float* grad;
  int64_t batch_stride;
  int64_t rows;
  const float* heads = nullptr;
  int64_t heads_rows = 0;
};
// At most this many segments in one attention call on a device (its kernels take them by value;
// more is an error there, on the emulated device too).
constexpr int kMaxAttentionSegments = 4;

struct AttentionDims {
  int64_t B, n, H, Dh, S;  // S = total key rows over all segments
  int64_t NB = 0;          // rows of the bias table (0: no bias)
};

// Adaptive attention span (MODEL.md): a visible weight of head h at distance d is multiplied by
// m = clamp(span_ramp(z[h], d), 0, 1), then each query's weights are renormalized (their sum +
// 1e-8). Off while z is null. On a device the pointers point into device memory.
struct AttentionSpan {
  const float* z = nullptr;           // (H) span ratios
  float* dz = nullptr;                // (H) their gradient, added to (backward; null: none)
  const int32_t* distance = nullptr;  // (n, S) as the bucket table: t - u of each visible key
  float* raw = nullptr;               // (B,H,S,n) the weights before the mask: forward writes, backward reads
  int64_t mem_len = 0, ramp = 1;
};
// The mask before its clamp: (z mem_len - (d - 1)) / ramp + 1. Its slope in z is mem_len / ramp
// on [0, 1], the ends included (as PyTorch's clamp passes gradient).
FBT_HOST_DEVICE inline float span_ramp(float z, int32_t d, int64_t mem_len, int64_t ramp) {
  return (z * float(mem_len) + float(1 - d)) / float(ramp) + 1.f;
}

// One attention call's saved values, for the summed key/value gradient (cpu::attention_kv_grad_sum).
struct AttentionGradPart {
  const float* probs;    // (B,H,S,n), as attention_forward saved them
  const float* drop;     // (B,H,S,n) dropout multipliers or null
  const float* dlogits;  // (B,H,S,n), as attention_backward left them
  const float* q;        // (B,n,I)
  const float* dout;     // (B,n,I)
};

// One single-query attention call's share of the key/value gradient of cache rows, kept to be
// added later (cpu::add_deferred_kv_grads): the call's saved weights and gradients and, per
// segment of cache rows it read, where those rows' gradient lives. CPU.
struct DeferredKVSegment {
  float* grad;           // the gradient of the segment's first row (batch b at + b*batch_stride)
  int64_t batch_stride;  // floats between batches
  int64_t row_begin, rows;  // cache rows [row_begin, row_begin + rows)
  int64_t key;              // the index of row_begin among the call's S keys
};
constexpr int kMaxDeferredKVSegments = 2;  // a cache's two views (ops.hpp, KVCache)
struct DeferredKVPart {
  const float* probs;    // (B,H,S) the weights, as attention_forward saved them
  const float* drop;     // (B,H,S) dropout multipliers or null
  const float* raw;      // (B,H,S) the weights before the span's mask, or null without a span
  const float* dlogits;  // (B,H,S), as attention_backward left them
  const float* q;        // (B,I)
  const float* dout;     // (B,I)
  int64_t S;
  DeferredKVSegment segs[kMaxDeferredKVSegments];
  int nsegs;
};

// ---- the embedding's gradient ----
// Rows 0..N-1 grouped by token id (host side, O(N log N)): distinct tokens in increasing order,
// each token's rows in row order. The backward sums token tokens[u]'s rows
// rows[starts[u] .. starts[u+1]) in that order: the same floats as a scatter-add in row order.
struct TokenRows {
  std::vector<int32_t> rows, tokens, starts;  // starts: tokens.size() + 1 offsets into rows
};
inline TokenRows group_by_token(const int32_t* ids, int64_t N) {
  TokenRows g;
  g.rows.resize(size_t(N));
  for (int64_t r = 0; r < N; ++r) g.rows[size_t(r)] = int32_t(r);
  std::stable_sort(g.rows.begin(), g.rows.end(), [&](int32_t a, int32_t b) { return ids[a] < ids[b]; });
  for (int64_t k = 0; k < N; ++k)
    if (k == 0 || ids[g.rows[size_t(k)]] != ids[g.rows[size_t(k - 1)]]) {
      g.tokens.push_back(ids[g.rows[size_t(k)]]);
      g.starts.push_back(int32_t(k));
    }
  g.starts.push_back(int32_t(N));
  return g;
}

}  // namespace fbt
