#include "models/transformer_xl.hpp"

#include <algorithm>

#include "backend/threads.hpp"
#include "util/check.hpp"

namespace fbt {

TransformerXL::TransformerXL(const ModelConfig& cfg, bool initialize) : Model(cfg) {
  check(cfg.type == "transformer_xl", "TransformerXL: the config's type is ", cfg.type);
  const int64_t D = cfg.dim;
  ParamStore& ps = params_;
  // Registration order follows MODEL.md's table (the feedback model's, without its memory parts).
  token_emb_ = nn::Embedding(ps, "token_emb", cfg.num_tokens, D);
  pos_bias_ = ps.add("pos_bias.weight", {cfg.num_buckets, cfg.heads}, ParamRole::PositionBias);
  for (int64_t l = 0; l < cfg.depth; ++l) {
    const std::string p = "layers." + std::to_string(l) + ".";
    nn::Block b;
    b.attn = nn::MemoryAttention(ps, p, D, cfg.heads, cfg.dim_head, /*own_kv=*/true, span_settings(cfg));
    if (cfg.cross_attend) b.cross = nn::CrossAttention(ps, p + "cross_norm", p + "cross_attn", D, cfg.heads, cfg.dim_head);
    b.ff = nn::FeedForward(ps, p + "ff_norm", p + "ff", D, cfg.ff_inner());
    layers_.push_back(b);
  }
  out_norm_ = nn::LayerNorm(ps, "out_norm", D);
  to_logits_ = nn::Linear(ps, "to_logits", D, cfg.num_tokens, true);
  ps.finalize();
  if (initialize) init(0);
}

// What the T queries of a call see among the m + T rows [state rows read; call]: query t (row
// m + t) sees rows u with m + t - span <= u < m + t, strictly past, biased by the bucket of
// m + t - u. span: mem_len, or less where the heads' adaptive spans reach less far.
nn::Window TransformerXL::window(int64_t B, int64_t T, int64_t m, int64_t span, const CallOptions& o) const {
  const int64_t S = m + T;
  nn::Window w;
  w.n = T;
  w.bucket.assign(size_t(T * S), -1);
  if (cfg_.adapt_span) w.distance.assign(size_t(T * S), 0);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t u = std::max<int64_t>(0, m + t - span); u < m + t; ++u) {
      w.bucket[size_t(t * S + u)] = bucket(m + t - u, cfg_.num_buckets, cfg_.max_distance);
      if (cfg_.adapt_span) w.distance[size_t(t * S + u)] = int32_t(m + t - u);
    }
  if (m == 0) {  // the first step of a call without a state sees no key
    w.sees_a_key.assign(size_t(B * T), 1);
    for (int64_t b = 0; b < B; ++b) w.sees_a_key[size_t(b * T)] = 0;
  }
  w.dropout_p = o.train ? cfg_.attn_dropout : 0.f;
  w.rng = o.rng;
  return w;
}

ForwardOutput TransformerXL::forward(const int32_t* tokens, int64_t B, int64_t T, State* state,
                                     const CallOptions& options) {
  check_call(B, T, state, options);
  check(options.policy.kind == DetachPolicy::Kind::None, "forward: detachment policies do not apply to transformer_xl (got ",
        options.policy.str(), ")");
  Tape& tp = tape();
  tp.set_device(device());  // this model's step: an error if the tape holds another device's
  const int64_t D = cfg_.dim, L = cfg_.depth, m = state ? state->memory.rows() : 0, keep = std::min(cfg_.mem_len, m + T);
  const Tensor* carried = m ? state->memory.tensor() : nullptr;  // (L, B, m, D)
  // Attention reads the state's last `read` rows: mem_len, or fewer where the spans reach less far.
  const int64_t span = std::min(cfg_.mem_len, span_reach()), read = std::min(m, span);
  const nn::Window w = window(B, T, read, span, options);
  const Device dev = device();
  const float ff_p = options.train ? cfg_.ff_dropout : 0.f;
  ForwardOutput res;
  res.memory = tp.arena().alloc(memory_shape(B, keep));
  Var h = token_emb_(tokens, Shape{B, T});  // (B,T,D)
  const Var context = options.context;
  for (int64_t l = 0; l < L; ++l) {
    threads::share_cores();
    const nn::Block& b = layers_[size_t(l)];
    // The layer's state rows that attention reads, copied (the state changes when the call ends).  (B, read, D)
    const float* layer_state = m ? carried->data + l * B * m * D : nullptr;  // (B, m, D)
    Var state_rows;
    if (read) {
      state_rows = tp.leaf({B, read, D});
      copy_rows(state_rows.data(), read * D, dev, layer_state + (m - read) * D, m * D, carried->device, B, read * D);
    }
    res.layer_inputs.push_back(h);
    // The new state: the old state's last `old` rows, then the call's inputs of this layer.  (B, keep, D)
    const int64_t old = keep - std::min(keep, T);
    const Tensor mem_l{res.memory.data + l * B * keep * D, Shape{B, keep, D}, dev};
    if (old) copy_rows(mem_l.data, keep * D, dev, layer_state + (m - old) * D, m * D, carried->device, B, old * D);
    h = run_piece(options, [this, &b, h, state_rows, context, w, ff_p, mem_l, read, old, T, keep] {
      const int64_t D = cfg_.dim;
      const Var full = state_rows ? concat({state_rows, h}, 1) : h;  // (B, read+T, D): state rows first (constants)
      Var kv = b.attn.to_kv(b.attn.norm(full));                     // (B, read+T, 2I)
      Var ctx_kv = context ? b.cross.to_kv(context) : Var();
      copy_rows(mem_l.data + old * D, keep * D, device(), h.data() + (T - (keep - old)) * D, T * D, device(),
                mem_l.shape[0], (keep - old) * D);
      return std::vector<Var>{b(h, {{kv, 0, read + T}}, w, pos_bias_, no_projection_, 0, ctx_kv, ff_p)};
    })[0];
  }
  res.logits = to_logits_(out_norm_(h));  // (B,T,V)
  if (options.targets) res.loss = cross_entropy(res.logits, options.targets);
  if (state) {
    state->memory.assign(res.memory);
    state->projection = ProjectedMemory{};
  }
  return res;
}

}  // namespace fbt
