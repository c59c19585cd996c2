// The differentiable op library: each call computes its forward with the kernel of the tape's
// device (backend/cpu/ or backend/cuda/, one signature for both: ops/dispatch.hpp) and, when the
// tape records and an input needs a gradient, records one backward closure. Shapes use the legend of autograd/tensor.hpp; "(...,C)" means any leading dims.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "autograd/params.hpp"
#include "backend/rng.hpp"
#include "autograd/tape.hpp"

namespace fbt {

// The weights a model's time loop multiplies by, packed for products of few rows (one time
// step), which run much faster on them: at every freeze of the parameter store
// (ParamStore::freeze) each is packed as W^T for the forward product and as W for the input
// gradient (CPU), into storage kept from one freeze to the next, and the packs are dropped when
// the store thaws, so none is ever stale. The model owns them and hands them to the layers that
// multiply by those weights; linear() and project_memory() read a weight's packs through them.
class StepWeightPacks {
 public:
  // weights: 2-D parameters of params (repeats are packed once); registers the freeze hook.
  static std::shared_ptr<StepWeightPacks> make(ParamStore& params, const std::vector<Var>& weights);
  struct Packs {
    const float* fwd = nullptr;  // W^T: (In, Out) in column panels
    const float* bwd = nullptr;  // W: (Out, In) in column panels
  };
  // W's packs now: none unless the store is frozen, on the CPU, and W is one of the weights.
  Packs of(Var W) const;

 private:
  explicit StepWeightPacks(std::vector<Var> weights);
  void pack();
  std::vector<Var> weights_;
  std::vector<Packs> packs_;  // per weight, while packed
  DeviceBuffer storage_;
};

// y = x W^T + b.  x:(...,In)  W:(Out,In)  b:(Out) or empty  ->  (...,Out). The products read W's
// packs when `packs` has them (few rows: at most linear_packed_max_rows()).
Var linear(Var x, Var W, Var b = Var(), const StepWeightPacks* packs = nullptr);
// Its forward values alone, no tape: y = x W^T + b for N rows.
void linear_values(float* y, const float* x, Var W, const float* b, int64_t N, const StepWeightPacks* packs);
int64_t linear_packed_max_rows();
// Elementwise, same shapes.
Var add(Var a, Var b);
Var scale(Var x, float s);
// Multiplies row r of x:(...,C) by keep[r] in {0,1}; rows = x.rows().
Var mask_rows(Var x, const std::vector<uint8_t>& keep);
// Layer norm over the last axis (eps 1e-5).  x:(...,C)  w,b:(C)
Var layernorm(Var x, Var w, Var b);
// u:(...,2F) -> (...,F): u[..., :F] * gelu(u[..., F:])
Var geglu(Var u);
// W:(V,D), ids: shape.numel() token ids in [0,V)  ->  shape + (D)
Var embedding(Var W, const int32_t* ids, const Shape& ids_shape);
// Mean softmax cross-entropy over the rows that have a target.  logits:(...,V)  targets:
// logits.rows() ids in [0,V), or kNoTarget for a row with no loss (labelled data's ignored
// positions)  ->  0-d (0 when no row has a target)
constexpr int32_t kNoTarget = -1;
Var cross_entropy(Var logits, const int32_t* targets);
// softmax(w)-weighted sum of K same-shape values.  w:(K)
Var weighted_sum(Var w, const std::vector<Var>& xs);
// Concatenate / slice along `axis`.
Var concat(const std::vector<Var>& xs, int axis);
Var slice(Var x, int axis, int64_t begin, int64_t len);
// Inverted dropout with the counter-based generator; identity when p == 0.
Var dropout(Var x, float p, Rng& rng);

struct KVGradQueue;  // below
// Key/value rows [row_begin, row_begin+rows) of src:(B,R,2I) (keys then values per row).
struct KVSegment {
  Var src;
  int64_t row_begin = 0, rows = 0;
  Tensor heads = {};  // optional: the head-major mirror of src's storage (KVCache::heads)
  // With a KVGradGroup: these rows (the first keys; every member reads them alike) get their
  // key/value gradient from the group's sum instead of from this call.
  bool grouped = false;
  // The cache's queue (KVCache::deferred): a single query's share of these rows' gradient waits
  // there instead of being added at once.
  std::shared_ptr<KVGradQueue> deferred = nullptr;
};
// The key/value gradient of rows that several attention calls read alike (the memory rows every
// layer of a window reads through one shared projection), summed over the calls before it is
// added to the rows: one read-modify-write of them instead of one per call. kv_grad_group()
// records, at this point of the tape, the step that adds the sum, so it runs after the backward
// of every later call given the group. CPU only: elsewhere (or when nothing records) it returns
// null, and attention adds its own.
struct KVGradGroup;
std::shared_ptr<KVGradGroup> kv_grad_group();
// The key/value gradient of a cache's rows from single-query calls (one query per window, the
// exact model's steps), queued: each call's backward adds its share to the newest 16 rows at once
// and leaves the rest, for the older rows, in the queue, which adds it in batches of 16 calls (or
// sooner, when project_memory's backward reads a row still waiting, and at the sweep's end). Each
// row takes its shares in the order the calls made them, by the same FMAs, so the floats are those
// of adding every share at once; each older row is read and written once per batch instead of once
// per step (the time loop's attention backward was bound by that). CPU only: elsewhere, or when
// nothing records, kv_grad_queue() returns null and attention adds its whole share itself.
std::shared_ptr<KVGradQueue> kv_grad_queue();
// While one lives (tests), kv_grad_queue() returns null on this thread: every call adds its share.
struct NoKVGradDeferral {
  NoKVGradDeferral();
  ~NoKVGradDeferral();
  NoKVGradDeferral(const NoKVGradDeferral&) = delete;
  NoKVGradDeferral& operator=(const NoKVGradDeferral&) = delete;
  bool was;
};
// Adaptive attention span (MODEL.md): z:(H) the heads' span ratios (trainable); distance: n*S
// entries laid out as the bucket table, t - u of each visible key.
struct SpanMask {
  Var z;
  const std::vector<int32_t>* distance = nullptr;
  int64_t mem_len = 0, ramp = 1;
};
// Attention of a window of queries over the concatenated key rows of `segs`.
// q:(B,n,I) pre-scaled; bucket: n*S entries (-1 invisible, else a row of bias);
// bias:(NB,H) or empty; dropout on the attention weights when p > 0 (after the span's mask when
// span is given).  ->  (B,n,I)
Var attention(Var q, const std::vector<KVSegment>& segs, const std::vector<int32_t>& bucket, Var bias, int64_t H,
              float dropout_p = 0.f, Rng* rng = nullptr, const std::shared_ptr<KVGradGroup>& group = nullptr,
              const SpanMask* span = nullptr);

// A key/value cache (B,R,2I) of one projection P (2I,D): one storage, two gradient views.
// heads (optional, CPU): a head-major mirror (B*H, 2, R, Dh) of the storage, kept current by
// project_memory (and mirror_kv_rows after other writes); window attention reads every head's
// keys and values there in place instead of gathering them from rows 2I apart.
struct KVCache {
  Var P;     // the projection (2I, D) that writes the rows
  Var diff;  // the storage as readers that differentiate into the memory vectors see it
  Var cnst;  // the same storage for readers that hold the memory vectors constant (a detachment
             // policy): their gradient trains P and the norm, never the vectors
  Tensor heads = {};
  const StepWeightPacks* packs = nullptr;  // P's, when the model packs it
  std::shared_ptr<KVGradQueue> deferred = nullptr;  // kv_grad_queue(), for single-query readers
};
// Rows [row, row + n) of c's storage into its mirror (nothing without one).
void mirror_kv_rows(const KVCache& c, int64_t row, int64_t n);
// Projects memory vectors into key/value caches: rows [row, row+n) of each cache's storage
// become layernorm(mem) P^T (the norm computed once for all).  mem:(B,n,D).
// Gradient read back from those rows of BOTH views reaches P and the norm's parameters; only the
// rows' `diff` gradient reaches mem: a reader of `cnst` treats the memory vector as a constant,
// as MODEL.md's detachment policies require.
void project_memory(Var mem, Var norm_w, Var norm_b, const std::vector<KVCache>& caches, int64_t row);

// sqrt of the sum of squares of all gradients (double accumulation).
double global_grad_norm(const ParamStore& params);
// The gradient block, on the parameters' device: g *= s (clipping, a micro-batch's share), and
// acc += g (acc: numel floats there; gradient accumulation).
void scale_grads(ParamStore& params, float s);
void add_grads_to(float* acc, const ParamStore& params);

}  // namespace fbt
