// The modules of the Feedback Transformer's memory path (MODEL.md): self-attention of a window
// over the memory, the projection of memory vectors into keys/values, and a block (attention,
// cross-attention, feed-forward with their residuals). They hold parameters and call ops; the
// time loop, the rows of the cache and the detachment policy are the model's (models/).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "nn/layers.hpp"

namespace fbt::nn {

// What every layer of one window shares: which memory rows its queries see and how.
struct Window {
  int64_t n = 0;                    // steps (queries) in the window
  std::vector<int32_t> bucket;      // n x S: -1 invisible, else the position-bias bucket
  std::vector<uint8_t> sees_a_key;  // per (B, n) query, only when some query sees no key; else empty
  std::vector<int32_t> distance;    // n x S as bucket: t - u of each visible key (adaptive span only)
  bool local = false;               // queries also see the window's earlier steps (n > 1)
  float dropout_p = 0.f;            // attention dropout
  Rng* rng = nullptr;
  std::shared_ptr<KVGradGroup> group;  // sums the memory rows' key/value gradient over the layers
};

// Memory vectors into keys/values: layernorm(mem_norm) then one projection (2I,D) per cache (one
// shared, or each layer's to_kv). The weights are handed over by the model that registered them.
struct MemoryProjection {
  LayerNorm norm;
  std::vector<Var> P;  // one per key/value cache
  const StepWeightPacks* packs = nullptr;  // the model's packs of P
  MemoryProjection() = default;
  MemoryProjection(LayerNorm mem_norm, std::vector<Var> projections) : norm(mem_norm), P(std::move(projections)) {}
  // Rows [row, row+n) of every cache become norm(vectors) P^T.  vectors:(B,n,D)
  void operator()(Var vectors, const std::vector<KVCache>& caches, int64_t row) const {
    project_memory(vectors, norm.w, norm.b, caches, row);
  }
  // The keys/values of a window's own hidden states through cache k's projection.  h:(B,n,D) -> (B,n,2I)
  Var local(Var h, size_t k) const { return linear(norm(h), P[k], Var(), packs); }
};

// Adaptive attention span (MODEL.md): whether each head learns its span, and the constants of
// the mask (the model's mem_len and adapt_span_ramp).
struct SpanSettings {
  bool on = false;
  int64_t mem_len = 0, ramp = 1;
};

// Self-attention over memory: q = to_q(attn_norm(h)) / sqrt(Dh) attends to the memory rows
// `segs` and, in a window of several steps, to the window's own earlier steps projected by cache
// `kv` of `proj`; a query with no visible key gets zero attention and no to_out bias.
// h:(B,n,D) -> (B,n,D)
struct MemoryAttention {
  LayerNorm norm;
  Linear to_q, to_kv, to_out;  // to_q:(I,D) to_out:(D,I); to_kv:(2I,D) only without shared_kv
  Var span;                    // (H) span ratios, only with adaptive span; the mask reads w.distance
  SpanSettings span_settings;
  int64_t heads = 0, dim_head = 0;
  MemoryAttention() = default;
  MemoryAttention(ParamStore& ps, const std::string& prefix, int64_t dim, int64_t heads, int64_t dim_head, bool own_kv,
                  const SpanSettings& span = {});
  Var operator()(Var h, std::vector<KVSegment> segs, const Window& w, Var pos_bias, const MemoryProjection& proj,
                 size_t kv) const;
};

// One layer: h += attn(h); h += cross(h) (with a context); h += ff(h).
struct Block {
  MemoryAttention attn;
  CrossAttention cross;  // only with cross_attend
  FeedForward ff;
  // The linears whose products run once per time step (the model packs their weights while frozen).
  std::vector<Linear*> step_linears();
  // ctx_kv: this layer's projected context, or an empty Var.  h:(B,n,D) -> (B,n,D)
  Var operator()(Var h, const std::vector<KVSegment>& segs, const Window& w, Var pos_bias, const MemoryProjection& proj,
                 size_t kv, Var ctx_kv, float ff_dropout_p) const;
};

}  // namespace fbt::nn
