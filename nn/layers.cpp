#include "nn/layers.hpp"

#include <cmath>

namespace fbt::nn {

Linear::Linear(ParamStore& ps, const std::string& name, int64_t in, int64_t out, bool bias, ParamRole role)
    : W(ps.add(name + ".weight", {out, in}, role)), b(bias ? ps.add(name + ".bias", {out}, ParamRole::Bias) : Var()) {}

LayerNorm::LayerNorm(ParamStore& ps, const std::string& name, int64_t dim)
    : w(ps.add(name + ".weight", {dim}, ParamRole::NormWeight)), b(ps.add(name + ".bias", {dim}, ParamRole::Bias)) {}

Embedding::Embedding(ParamStore& ps, const std::string& name, int64_t num, int64_t dim)
    : W(ps.add(name + ".weight", {num, dim}, ParamRole::Embedding)) {}

FeedForward::FeedForward(ParamStore& ps, const std::string& norm_name, const std::string& name, int64_t dim,
                         int64_t hidden)
    : norm(ps, norm_name, dim), w_in(ps, name + ".w_in", dim, 2 * hidden, true), w_out(ps, name + ".w_out", hidden, dim, true, ParamRole::ResidualOut) {}

Var FeedForward::operator()(Var x, float dropout_p, Rng* rng) const {
  Var y = geglu(w_in(norm(x)));
  if (dropout_p > 0.f) y = dropout(y, dropout_p, *rng);
  return w_out(y);
}

CrossAttention::CrossAttention(ParamStore& ps, const std::string& norm_name, const std::string& name, int64_t dim,
                               int64_t heads_, int64_t dim_head_)
    : norm(ps, norm_name, dim),
      to_q(ps, name + ".to_q", dim, heads_ * dim_head_, false),
      to_kv(ps, name + ".to_kv", dim, 2 * heads_ * dim_head_, false),
      to_out(ps, name + ".to_out", heads_ * dim_head_, dim, true, ParamRole::ResidualOut),
      heads(heads_),
      dim_head(dim_head_) {}

Var CrossAttention::operator()(Var x, Var ctx_kv, float dropout_p, Rng* rng) const {
  const int64_t n = x.shape()[1], Tc = ctx_kv.shape()[1];
  Var q = scale(to_q(norm(x)), 1.0f / std::sqrt(float(dim_head)));
  std::vector<int32_t> all_visible(size_t(n * Tc), 0);
  return to_out(attention(q, {{ctx_kv, 0, Tc}}, all_visible, Var(), heads, dropout_p, rng));
}

}  // namespace fbt::nn
