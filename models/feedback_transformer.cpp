#include "models/feedback_transformer.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <utility>

#include "backend/threads.hpp"
#include "util/check.hpp"

namespace fbt {

FeedbackTransformer::FeedbackTransformer(const ModelConfig& cfg, bool initialize) : Model(cfg) {
  const int64_t D = cfg.dim, L = cfg.depth;
  ParamStore& ps = params_;
  // Registration order follows MODEL.md's table; it is the order of the parameter block.
  token_emb_ = nn::Embedding(ps, "token_emb", cfg.num_tokens, D);
  pos_bias_ = ps.add("pos_bias.weight", {cfg.num_buckets, cfg.heads}, ParamRole::PositionBias);
  const nn::LayerNorm mem_norm(ps, "mem_norm", D);
  const Var shared_kv = cfg.shared_kv ? ps.add("shared_kv.weight", {2 * cfg.inner(), D}, ParamRole::Matrix) : Var();
  layer_weight_ = ps.add("layer_weight", {L + 1}, ParamRole::MixWeights);
  for (int64_t l = 0; l < L; ++l) {
    const std::string p = "layers." + std::to_string(l) + ".";
    nn::Block b;
    b.attn = nn::MemoryAttention(ps, p, D, cfg.heads, cfg.dim_head, /*own_kv=*/!cfg.shared_kv, span_settings(cfg));
    if (cfg.cross_attend) b.cross = nn::CrossAttention(ps, p + "cross_norm", p + "cross_attn", D, cfg.heads, cfg.dim_head);
    b.ff = nn::FeedForward(ps, p + "ff_norm", p + "ff", D, cfg.ff_inner());
    layers_.push_back(b);
  }
  std::vector<Var> kv_weights{shared_kv};
  if (!cfg.shared_kv) {
    kv_weights.clear();
    for (const nn::Block& b : layers_) kv_weights.push_back(b.attn.to_kv.W);
  }
  projection_ = nn::MemoryProjection(mem_norm, kv_weights);
  // The products of the time loop (a few rows each) read these weights packed when frozen.
  std::vector<Var> step_weights = kv_weights;
  for (nn::Block& b : layers_)
    for (nn::Linear* lin : b.step_linears()) step_weights.push_back(lin->W);
  step_packs_ = StepWeightPacks::make(ps, step_weights);
  for (nn::Block& b : layers_)
    for (nn::Linear* lin : b.step_linears()) lin->packs = step_packs_.get();
  projection_.packs = step_packs_.get();
  out_norm_ = nn::LayerNorm(ps, "out_norm", D);
  to_logits_ = nn::Linear(ps, "to_logits", D, cfg.num_tokens, true);
  ps.finalize();

  bucket_of_.assign(size_t(cfg.mem_len + cfg.seq_len + 1), 0);
  for (int64_t d = 1; d < int64_t(bucket_of_.size()); ++d)
    bucket_of_[size_t(d)] = bucket(d, cfg.num_buckets, cfg.max_distance);
  if (initialize) init(0);
}



// One call's working memory: the memory vectors of the call (rows [0, m0) carried in, then one
// row per step) and their keys/values in one cache per distinct projection. The cache has one
// storage and two gradient views (`diff`, `cnst`: see the header and project_memory).
struct FeedbackTransformer::Call {
  int64_t B = 0, T = 0, m0 = 0, cap = 0;  // cap = m0 + T rows
  int64_t reach = 0;  // the keys a query reads: at most this many steps back (mem_len, or the spans')
  const CallOptions* options = nullptr;
  float ff_dropout_p = 0.f;
  Tensor mem_buf;               // (B, cap, D)
  std::vector<KVCache> caches;  // (B, cap, 2I) each
  std::vector<Var> ctx_kv;      // per layer: the projected context, with cross_attend
  bool keep_projection = false;
  uint64_t freeze_id = 0;
};

// Cache setup: the call's buffers, the carried memory's keys/values (the state's kept projection
// when it belongs to the current freeze, else projected again) and the context's.
FeedbackTransformer::Call FeedbackTransformer::open_call(int64_t B, int64_t T, State* state, const CallOptions& o) const {
  const ModelConfig& c = cfg_;
  const int64_t D = c.dim, I = c.inner();
  Tape& tp = tape();
  const Device dev = device();
  Call call;
  call.B = B, call.T = T, call.m0 = state ? state->memory.rows() : 0, call.cap = call.m0 + T;
  call.reach = std::min(c.mem_len + c.seq_len, span_reach());
  call.options = &o;
  call.ff_dropout_p = o.train ? c.ff_dropout : 0.f;
  call.keep_projection = state && state->keep_projection;
  call.freeze_id = params_.freeze_id();
  const int64_t m0 = call.m0, cap = call.cap;
  call.mem_buf = tp.arena().alloc({B, cap, D});
  const Tensor* carried = m0 ? state->memory.tensor() : nullptr;
  if (m0) copy_rows(call.mem_buf.data, cap * D, dev, carried->data, m0 * D, carried->device, B, m0 * D);

  const bool mirror = dev == Device::CPU && c.seq_len > 1;  // windows on the CPU (ops.hpp, KVCache)
  for (const Var& P : projection_.P) {
    Var storage = tp.leaf({B, cap, 2 * I});
    call.caches.push_back({P, tp.alias(storage, true), tp.alias(storage, true),
                           mirror ? tp.arena().alloc({B * c.heads, 2, cap, c.dim_head}) : Tensor{}, step_packs_.get(),
                           c.seq_len == 1 ? kv_grad_queue() : nullptr});
  }
  const ProjectedMemory* kept = state ? &state->projection : nullptr;
  if (m0 && kept && call.freeze_id && kept->freeze_id == call.freeze_id) {
    check(kept->B == B && kept->rows == m0 && kept->kv.size() == call.caches.size(), "forward: the projected memory is (B=",
          kept->B, ", ", kept->rows, " rows, ", kept->kv.size(), " caches), the memory is (B=", B, ", ", m0, " rows) with ",
          call.caches.size(), " caches");
    for (size_t k = 0; k < call.caches.size(); ++k) {  // the previous call's projection, same weights
      copy_rows(call.caches[k].diff.data(), cap * 2 * I, dev, kept->kv[k].data(), m0 * 2 * I, kept->kv[k].device(), B,
                m0 * 2 * I);
      mirror_kv_rows(call.caches[k], 0, m0);
    }
  } else if (m0) {
    // The carried rows any window reads (all of them but where adaptive spans reach less far),
    // projected as a constant: no gradient flows into a received state.  (B, m0 - first, D)
    const int64_t first = first_memory_row(call, 0);
    Var rows = tp.leaf({B, m0 - first, D});
    copy_rows(rows.data(), (m0 - first) * D, dev, carried->data + first * D, m0 * D, carried->device, B, (m0 - first) * D);
    projection_(rows, call.caches, first);
  }
  if (c.cross_attend)
    for (const nn::Block& b : layers_) call.ctx_kv.push_back(b.cross.to_kv(o.context));
  return call;
}

// The rows a window at call step s sees and how (MODEL.md): memory rows [lo, p) with their
// position buckets, then, in a window of several steps, its own earlier steps.
nn::Window FeedbackTransformer::window(const Call& call, int64_t s) const {
  const int64_t n = std::min(cfg_.seq_len, call.T - s);
  const int64_t p = call.m0 + s, M = p - first_memory_row(call, s);
  nn::Window w;
  w.n = n;
  w.local = n > 1;
  const int64_t S = M + (w.local ? n : 0);
  w.bucket.assign(size_t(n * S), -1);
  if (cfg_.adapt_span) w.distance.assign(size_t(n * S), 0);
  auto see = [&](int64_t i, int64_t j, int64_t d) {  // query i sees key j at distance d
    if (d > call.reach) return;  // masked out by every head's span
    w.bucket[size_t(i * S + j)] = bucket_of_[size_t(d)];
    if (cfg_.adapt_span) w.distance[size_t(i * S + j)] = int32_t(d);
  };
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < M; ++j) see(i, j, i + M - j);
    if (w.local)
      for (int64_t j = 0; j < i; ++j) see(i, M + j, i - j);
  }
  if (M == 0) {  // only the very first step of an empty memory sees no key
    w.sees_a_key.assign(size_t(call.B * n), 1);
    for (int64_t b = 0; b < call.B; ++b) w.sees_a_key[size_t(b * n)] = 0;
  }
  const CallOptions& o = *call.options;
  w.dropout_p = o.train ? cfg_.attn_dropout : 0.f;
  w.rng = o.rng;
  return w;
}

// The first memory row window s may differentiate into under the call's policy: rows
// [lo, split) of its memory are constants for it, [split, p) differentiable.
// The first memory row window s reads: mem_len back, or less where the spans reach less far.
int64_t FeedbackTransformer::first_memory_row(const Call& call, int64_t s) const {
  return std::max<int64_t>(0, call.m0 + s - std::min(cfg_.mem_len, call.reach));
}

int64_t FeedbackTransformer::first_differentiable_row(const Call& call, int64_t s) const {
  const int64_t p = call.m0 + s, lo = first_memory_row(call, s);
  return std::clamp<int64_t>(call.m0 + std::max<int64_t>(0, call.options->policy.first_differentiable(s)), lo, p);
}

// One window through every layer (MODEL.md's step): returns the top hidden state and the
// window's memory vectors, which it writes into the call's memory and, projected, into the
// caches for the windows after it.  h:(B,n,D) -> {(B,n,D), (B,n,D)}
std::pair<Var, Var> FeedbackTransformer::run_window(const Call& call, Var h, int64_t s, int64_t split, nn::Window w) const {
  const int64_t p = call.m0 + s, lo = first_memory_row(call, s);
  // Every layer reads the same memory rows of the one shared cache: their key/value gradient is
  // summed over the layers first (ops.hpp, KVGradGroup); with one query per window it does not pay.
  if (cfg_.shared_kv && cfg_.seq_len > 1) w.group = kv_grad_group();
  std::vector<Var> hs{h};
  for (size_t l = 0; l < layers_.size(); ++l) {
    const size_t k = cfg_.shared_kv ? 0 : l;
    const KVCache& kc = call.caches[k];
    std::vector<KVSegment> segs;
    if (split > lo) segs.push_back({kc.cnst, lo, split - lo, kc.heads, true, kc.deferred});
    if (p > split) segs.push_back({kc.diff, split, p - split, kc.heads, true, kc.deferred});
    h = layers_[l](h, segs, w, pos_bias_, projection_, k, call.ctx_kv.empty() ? Var() : call.ctx_kv[l],
                   call.ff_dropout_p);
    hs.push_back(h);
  }
  Var mem = cfg_.keep_last_hidden ? h : weighted_sum(layer_weight_, hs);  // (B,n,D)
  const int64_t D = cfg_.dim;
  copy_rows(call.mem_buf.data + p * D, call.cap * D, device(), mem.data(), w.n * D, device(), call.B, w.n * D);
  // The last window's memory is read by no one in this call, unless the projection is kept.
  if (s + w.n < call.T || (call.keep_projection && call.freeze_id)) projection_(mem, call.caches, p);
  return {h, mem};
}

// Teardown: the state after the call (its last min(mem_len, m0 + T) rows) into the output and
// the carried state, with the projection of those rows when it is kept.
void FeedbackTransformer::close_call(Call& call, ForwardOutput& res, State* state) const {
  const int64_t B = call.B, cap = call.cap, D = cfg_.dim, I2 = 2 * cfg_.inner(), keep = std::min(cfg_.mem_len, cap);
  const Device dev = device();
  res.memory = tape().arena().alloc({B, keep, D});
  copy_rows(res.memory.data, keep * D, dev, call.mem_buf.data + (cap - keep) * D, cap * D, dev, B, keep * D);
  if (!state) return;
  state->memory.assign(res.memory);
  ProjectedMemory& kept = state->projection;
  kept.freeze_id = call.keep_projection ? call.freeze_id : 0;  // 0: not reusable
  if (!kept.freeze_id) return;
  kept.B = B, kept.rows = keep;
  kept.kv.resize(call.caches.size());
  for (size_t k = 0; k < call.caches.size(); ++k) {  // the buffers of the previous call when they fit
    DeviceBuffer& kv = kept.kv[k];
    if (kv.size() != size_t(B * keep * I2) || kv.device() != dev) kv = DeviceBuffer(dev, size_t(B * keep * I2));
    copy_rows(kv.data(), keep * I2, dev, call.caches[k].diff.data() + (cap - keep) * I2, cap * I2, dev, B, keep * I2);
  }
}

ForwardOutput FeedbackTransformer::forward(const int32_t* tokens, int64_t B, int64_t T, State* state,
                                           const CallOptions& options) {
  check_call(B, T, state, options);
  tape().set_device(device());  // this model's step: an error if the tape holds another device's
  const FrozenWeights frozen = freeze_for(B, T);
  // Shared: with recompute, the windows run again in the backward, after this call has returned.
  const auto call = std::make_shared<Call>(open_call(B, T, state, options));
  Var emb = token_emb_(tokens, Shape{B, T});  // (B,T,D): all positions at once
  ForwardOutput res;
  std::vector<Var> outs;
  // Recomputed windows go in groups of at least kRecomputeRows rows: a group's weight gradients
  // are summed when its recomputation ends, and products of fewer rows would cost more in
  // re-reading the gradient than in arithmetic. Without recompute a group is one window.
  const int64_t rows = B * cfg_.seq_len;
  const int64_t group = options.recompute ? std::max<int64_t>(1, (kRecomputeRows + rows - 1) / rows) : 1;
  for (int64_t s0 = 0; s0 < T; s0 += group * cfg_.seq_len) {
    threads::share_cores();
    struct Step {
      nn::Window w;
      int64_t s, split;
    };
    std::vector<Step> steps;
    for (int64_t s = s0; s < std::min(T, s0 + group * cfg_.seq_len); s += cfg_.seq_len)
      steps.push_back({window(*call, s), s, first_differentiable_row(*call, s)});
    const std::vector<Var> out = run_piece(options, [this, call, emb, steps] {
      std::vector<Var> hm;  // h, mem of each window
      for (const Step& st : steps) {
        const auto [h, mem] = run_window(*call, slice(emb, 1, st.s, st.w.n), st.s, st.split, st.w);
        hm.push_back(h), hm.push_back(mem);
      }
      return hm;
    });
    for (size_t k = 0; k < steps.size(); ++k) {
      outs.push_back(out[2 * k]);
      res.written.push_back(out[2 * k + 1]);
      res.written_start.push_back(steps[k].s);
    }
  }
  Var out = outs.size() == 1 ? outs[0] : concat(outs, 1);  // (B,T,D)
  res.logits = to_logits_(out_norm_(out));                 // (B,T,V)
  if (options.targets) res.loss = cross_entropy(res.logits, options.targets);
  close_call(*call, res, state);
  return res;
}

}  // namespace fbt
