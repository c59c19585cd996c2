#include "nn/memory.hpp"

#include <cmath>

namespace fbt::nn {

MemoryAttention::MemoryAttention(ParamStore& ps, const std::string& prefix, int64_t dim, int64_t heads_,
                                 int64_t dim_head_, bool own_kv, const SpanSettings& span_)
    : norm(ps, prefix + "attn_norm", dim),
      to_q(ps, prefix + "attn.to_q", dim, heads_ * dim_head_, false),
      to_kv(own_kv ? Linear(ps, prefix + "attn.to_kv", dim, 2 * heads_ * dim_head_, false) : Linear()),
      to_out(ps, prefix + "attn.to_out", heads_ * dim_head_, dim, true, ParamRole::ResidualOut),
      span(span_.on ? ps.add(prefix + "attn.span", {heads_}, ParamRole::SpanRatio) : Var()),
      span_settings(span_),
      heads(heads_),
      dim_head(dim_head_) {}

Var MemoryAttention::operator()(Var h, std::vector<KVSegment> segs, const Window& w, Var pos_bias,
                                const MemoryProjection& proj, size_t kv) const {
  Var q = scale(to_q(norm(h)), 1.0f / std::sqrt(float(dim_head)));  // (B,n,I)
  if (w.local) segs.push_back({proj.local(h, kv), 0, w.n});          // (B,n,2I)
  const SpanMask mask{span, &w.distance, span_settings.mem_len, span_settings.ramp};
  Var o = to_out(attention(q, segs, w.bucket, pos_bias, heads, w.dropout_p, w.rng, w.group, span ? &mask : nullptr));
  return w.sees_a_key.empty() ? o : mask_rows(o, w.sees_a_key);
}

std::vector<Linear*> Block::step_linears() {
  std::vector<Linear*> out;
  for (Linear* lin : {&attn.to_q, &attn.to_kv, &attn.to_out, &ff.w_in, &ff.w_out, &cross.to_q, &cross.to_out})
    if (lin->W) out.push_back(lin);
  return out;
}

Var Block::operator()(Var h, const std::vector<KVSegment>& segs, const Window& w, Var pos_bias,
                      const MemoryProjection& proj, size_t kv, Var ctx_kv, float ff_dropout_p) const {
  h = add(h, attn(h, segs, w, pos_bias, proj, kv));
  if (ctx_kv) h = add(h, cross(h, ctx_kv, w.dropout_p, w.rng));
  return add(h, ff(h, ff_dropout_p, w.rng));
}

}  // namespace fbt::nn
