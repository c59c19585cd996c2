// Layers: named parameters registered in a ParamStore, and the op calls that use them.
// They own no storage and know nothing of devices or of the time loop (models/ does).
#pragma once
#include <string>

#include "autograd/params.hpp"
#include "backend/rng.hpp"
#include "ops/ops.hpp"

namespace fbt::nn {

struct Linear {  // y = x W^T + b;  W:(Out,In)  b:(Out)
  Var W, b;
  const StepWeightPacks* packs = nullptr;  // the model's, when W is one of its packed step weights
  Linear() = default;
  // role: ParamRole::ResidualOut for a projection that writes into the residual stream
  Linear(ParamStore& ps, const std::string& name, int64_t in, int64_t out, bool bias,
         ParamRole role = ParamRole::Matrix);
  Var operator()(Var x) const { return linear(x, W, b, packs); }
};

struct LayerNorm {  // weight, bias:(C)
  Var w, b;
  LayerNorm() = default;
  LayerNorm(ParamStore& ps, const std::string& name, int64_t dim);
  Var operator()(Var x) const { return layernorm(x, w, b); }
};

struct Embedding {  // weight:(V,D)
  Var W;
  Embedding() = default;
  Embedding(ParamStore& ps, const std::string& name, int64_t num, int64_t dim);
  Var operator()(const int32_t* ids, const Shape& s) const { return embedding(W, ids, s); }
};

// Pre-norm GEGLU feed-forward: w_out(dropout(geglu(w_in(norm(x))))).  w_in:(2F,D)  w_out:(D,F)
struct FeedForward {
  LayerNorm norm;
  Linear w_in, w_out;
  FeedForward() = default;
  FeedForward(ParamStore& ps, const std::string& norm_name, const std::string& name, int64_t dim, int64_t hidden);
  Var operator()(Var x, float dropout_p, Rng* rng) const;
};

// Cross-attention onto an encoded context: every query sees every context position, no bias.
struct CrossAttention {
  LayerNorm norm;
  Linear to_q, to_kv, to_out;  // to_q:(I,D)  to_kv:(2I,D)  to_out:(D,I)
  int64_t heads = 0, dim_head = 0;
  CrossAttention() = default;
  CrossAttention(ParamStore& ps, const std::string& norm_name, const std::string& name, int64_t dim, int64_t heads,
                 int64_t dim_head);
  // x:(B,n,D)  ctx_kv:(B,Tc,2I) = to_kv(context), projected once per call.
  Var operator()(Var x, Var ctx_kv, float dropout_p, Rng* rng) const;
};

}  // namespace fbt::nn
