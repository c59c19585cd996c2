// A deliberately naive Feedback Transformer, written from MODEL.md with primitive ops only: no
// key/value cache, no shared buffers, the memory kept as a list of per-step vectors, and the
// detachment policy applied with explicit detach() on each memory vector a window reads. The
// fast model (models/) must agree with it in values and in gradients under every policy.
#pragma once
#include <cmath>
#include <string>
#include <vector>

#include "models/feedback_transformer.hpp"
#include "ops/ops.hpp"

namespace fbt::testing {

// The tests' tiny model: small enough for central differences over every parameter, with heads,
// buckets and a span that exercise every path (tests change the fields their case is about).
inline ModelConfig tiny_model_config(const std::string& type = "feedback") {
  ModelConfig c;
  c.type = type;
  c.num_tokens = 7, c.dim = 6, c.depth = 2, c.heads = 2, c.dim_head = 3, c.ff_mult = 2;
  c.mem_len = 4, c.num_buckets = 6, c.max_distance = 9;
  c.shared_kv = type == "feedback";
  return c;
}

// The tiny model with an adaptive span whose mask cuts within its 4-step memory (ramp 2), and
// span ratios that keep every clamp end away from the central differences' steps.
inline ModelConfig with_span(ModelConfig c) {
  c.adapt_span = true, c.adapt_span_ramp = 2;
  return c;
}
// scale < 1: spans short enough that the model reads fewer rows than mem_len (Model::span_reach).
inline void set_spans(Model& m, float scale = 1.f) {
  const float z[] = {0.3f, 0.55f, 0.8f, 0.1f, 0.65f, 0.45f};
  int k = 0;
  for (int64_t l = 0; l < m.config().depth; ++l) {
    Var s = m.params().get("layers." + std::to_string(l) + ".attn.span");
    for (int64_t h = 0; h < m.config().heads; ++h) s.data()[h] = scale * z[k++ % 6];
  }
}

inline int32_t t5_bucket(int64_t d, int64_t nb, int64_t maxd) {
  const int64_t e = nb / 2;
  if (d < e) return int32_t(d);
  double v = e + std::floor(std::log(double(d) / e) / std::log(double(maxd) / e) * (nb - e));
  return int32_t(std::min<double>(double(nb - 1), v));
}

struct RefOutput {
  Var logits, loss;
  std::vector<Var> memory;   // per step, (B,1,D), the returned state (oldest first)
  std::vector<Var> written;  // per step of the call, (B,1,D): the memory vectors it wrote
};

inline RefOutput reference_forward(FeedbackTransformer& model, const std::vector<int32_t>& tokens,
                                   const std::vector<int32_t>& targets, int64_t B, int64_t T, const Tensor* memory,
                                   Var context, const DetachPolicy& policy, bool last_position_loss = false) {
  const ModelConfig& c = model.config();
  const ParamStore& ps = model.params();
  auto P = [&](const std::string& n) { return ps.get(n); };
  const int64_t D = c.dim, I = c.inner();
  std::vector<Var> entries;
  std::vector<int64_t> entry_step;  // call-relative; carried entries are negative
  if (memory) {
    const int64_t m = memory->shape[1];
    for (int64_t j = 0; j < m; ++j) {
      Var e = tape().leaf({B, 1, D});
      for (int64_t b = 0; b < B; ++b)
        for (int64_t k = 0; k < D; ++k) e.data()[b * D + k] = memory->data[(b * m + j) * D + k];
      entries.push_back(e);
      entry_step.push_back(j - m);
    }
  }
  Var emb = embedding(P("token_emb.weight"), tokens.data(), Shape{B, T});
  std::vector<Var> outs;
  for (int64_t s = 0; s < T; s += c.seq_len) {
    const int64_t n = std::min(c.seq_len, T - s);
    const int64_t M = std::min<int64_t>(c.mem_len, int64_t(entries.size()));
    const int64_t first = int64_t(entries.size()) - M;
    Var h = slice(emb, 1, s, n);
    std::vector<Var> hs{h};
    for (int64_t l = 0; l < c.depth; ++l) {
      const std::string p = "layers." + std::to_string(l) + ".";
      Var Pkv = c.shared_kv ? P("shared_kv.weight") : P(p + "attn.to_kv.weight");
      Var q = scale(linear(layernorm(h, P(p + "attn_norm.weight"), P(p + "attn_norm.bias")), P(p + "attn.to_q.weight")),
                    float(1.0 / std::sqrt(double(c.dim_head))));
      std::vector<Var> kvs;
      for (int64_t j = first; j < int64_t(entries.size()); ++j) {
        const bool differentiable = entry_step[size_t(j)] >= 0 && entry_step[size_t(j)] >= policy.first_differentiable(s);
        Var x = differentiable ? entries[size_t(j)] : detach(entries[size_t(j)]);
        kvs.push_back(linear(layernorm(x, P("mem_norm.weight"), P("mem_norm.bias")), Pkv));
      }
      if (n > 1) kvs.push_back(linear(layernorm(h, P("mem_norm.weight"), P("mem_norm.bias")), Pkv));
      std::vector<int32_t> table, distance;  // distance: step of the query minus step of the key
      std::vector<uint8_t> sees(size_t(B * n), 0);
      int64_t S = M + (n > 1 ? n : 0);
      for (int64_t i = 0; i < n; ++i) {
        for (int64_t j = 0; j < M; ++j) {
          const int64_t key_step = s - M + j;
          table.push_back(t5_bucket(s + i - key_step, c.num_buckets, c.max_distance));
          distance.push_back(int32_t(s + i - key_step));
        }
        if (n > 1)
          for (int64_t j = 0; j < n; ++j) {
            table.push_back(j < i ? t5_bucket(i - j, c.num_buckets, c.max_distance) : -1);
            distance.push_back(j < i ? int32_t(i - j) : 0);
          }
        for (int64_t b = 0; b < B; ++b) sees[size_t(b * n + i)] = (M > 0 || i > 0) ? 1 : 0;
      }
      Var o;
      if (S > 0) {
        Var kv = kvs.size() == 1 ? kvs[0] : concat(kvs, 1);
        const SpanMask span{c.adapt_span ? P(p + "attn.span") : Var(), &distance, c.mem_len, c.adapt_span_ramp};
        o = linear(attention(q, {{kv, 0, S}}, table, P("pos_bias.weight"), c.heads, 0.f, nullptr, nullptr,
                             c.adapt_span ? &span : nullptr),
                   P(p + "attn.to_out.weight"), P(p + "attn.to_out.bias"));
        o = mask_rows(o, sees);
        h = add(h, o);
      }
      if (c.cross_attend) {
        Var cq = scale(linear(layernorm(h, P(p + "cross_norm.weight"), P(p + "cross_norm.bias")),
                              P(p + "cross_attn.to_q.weight")),
                       float(1.0 / std::sqrt(double(c.dim_head))));
        Var ckv = linear(context, P(p + "cross_attn.to_kv.weight"));
        const int64_t Tc = context.shape()[1];
        std::vector<int32_t> all(size_t(n * Tc), 0);
        h = add(h, linear(attention(cq, {{ckv, 0, Tc}}, all, Var(), c.heads), P(p + "cross_attn.to_out.weight"),
                          P(p + "cross_attn.to_out.bias")));
      }
      Var u = linear(layernorm(h, P(p + "ff_norm.weight"), P(p + "ff_norm.bias")), P(p + "ff.w_in.weight"),
                     P(p + "ff.w_in.bias"));
      h = add(h, linear(geglu(u), P(p + "ff.w_out.weight"), P(p + "ff.w_out.bias")));
      hs.push_back(h);
    }
    outs.push_back(h);
    Var mem = c.keep_last_hidden ? h : weighted_sum(P("layer_weight"), hs);
    for (int64_t i = 0; i < n; ++i) {
      entries.push_back(slice(mem, 1, i, 1));
      entry_step.push_back(s + i);
    }
  }
  RefOutput r;
  Var out = concat(outs, 1);
  r.logits = linear(layernorm(out, P("out_norm.weight"), P("out_norm.bias")), P("to_logits.weight"), P("to_logits.bias"));
  if (last_position_loss) {
    std::vector<int32_t> last;
    for (int64_t b = 0; b < B; ++b) last.push_back(targets[size_t(b * T + T - 1)]);
    r.loss = cross_entropy(slice(r.logits, 1, T - 1, 1), last.data());
  } else {
    r.loss = cross_entropy(r.logits, targets.data());
  }
  for (size_t j = 0; j < entries.size(); ++j)
    if (entry_step[j] >= 0) r.written.push_back(entries[j]);
  const int64_t keep = std::min<int64_t>(c.mem_len, int64_t(entries.size()));
  r.memory.assign(entries.end() - keep, entries.end());
  (void)I;
  return r;
}

}  // namespace fbt::testing
