// The Transformer-XL-style baseline against MODEL.md "The baseline": against a naive reference
// (one query at a time over an explicit list of each layer's past inputs), whole-model gradient
// checks, the state carried across calls, names, and config errors.
#include <doctest/doctest.h>
#include <yaml-cpp/yaml.h>

#include <cmath>

#include "gradcheck.hpp"
#include "models/transformer_xl.hpp"
#include "reference_model.hpp"
#include "util/config_section.hpp"

using namespace fbt;
using namespace fbt::testing;

namespace {

ModelConfig tiny_xl(bool cross) {
  ModelConfig c = tiny_model_config("transformer_xl");
  c.cross_attend = cross;
  return c;
}

struct Call {
  int64_t B = 2, T = 7, m = 0;
  std::vector<int32_t> tokens, targets;
  std::vector<float> memory, context;  // memory: (L, B, m, D)
};

Call make_call(int64_t m, uint64_t seed, int64_t T = 7) {
  Call c;
  c.T = T, c.m = m;
  Rng r(seed);
  for (int64_t i = 0; i < c.B * T; ++i) {
    c.tokens.push_back(int32_t(r.uniform() * 7));
    c.targets.push_back(int32_t(r.uniform() * 7));
  }
  c.memory.resize(size_t(2 * c.B * m * 6));
  fill_normal(c.memory.data(), int64_t(c.memory.size()), seed + 1);
  c.context.resize(size_t(c.B * 3 * 6));
  fill_normal(c.context.data(), int64_t(c.context.size()), seed + 2);
  return c;
}

Var context_of(const Model& model, Call& c) {
  return model.config().cross_attend ? tape().leaf_copy(Tensor{c.context.data(), Shape{c.B, 3, 6}, Device::CPU}) : Var();
}

// MODEL.md's baseline written naively: per layer, the list of its inputs (state rows, then the
// call's), and every query attending to its visible rows on its own.
struct RefXL {
  Var logits, loss;
  std::vector<std::vector<Var>> state;  // per layer: its last min(mem_len, m + T) inputs, (B,1,D) each
};

RefXL reference_xl(Model& model, Call& c) {
  const ModelConfig& cfg = model.config();
  auto P = [&](const std::string& n) { return model.params().get(n); };
  const int64_t B = c.B, T = c.T, m = c.m, D = cfg.dim;
  Var h = embedding(P("token_emb.weight"), c.tokens.data(), Shape{B, T});
  Var ctx = context_of(model, c);
  RefXL r;
  for (int64_t l = 0; l < cfg.depth; ++l) {
    const std::string p = "layers." + std::to_string(l) + ".";
    std::vector<Var> inputs;  // oldest first: the state's rows (constants), then this call's
    for (int64_t j = 0; j < m; ++j) {
      Var e = tape().leaf({B, 1, D});
      for (int64_t b = 0; b < B; ++b)
        for (int64_t k = 0; k < D; ++k) e.data()[b * D + k] = c.memory[size_t(((l * B + b) * m + j) * D + k)];
      inputs.push_back(e);
    }
    for (int64_t t = 0; t < T; ++t) inputs.push_back(slice(h, 1, t, 1));
    auto norm = [&](Var x) { return layernorm(x, P(p + "attn_norm.weight"), P(p + "attn_norm.bias")); };
    std::vector<Var> outs;
    for (int64_t t = 0; t < T; ++t) {
      Var x = slice(h, 1, t, 1);  // (B,1,D)
      const int64_t now = m + t, first = std::max<int64_t>(0, now - cfg.mem_len);
      if (now > first) {
        std::vector<Var> kvs;
        std::vector<int32_t> table, distance;
        for (int64_t u = first; u < now; ++u) {
          kvs.push_back(linear(norm(inputs[size_t(u)]), P(p + "attn.to_kv.weight")));
          table.push_back(t5_bucket(now - u, cfg.num_buckets, cfg.max_distance));
          distance.push_back(int32_t(now - u));
        }
        Var q = scale(linear(norm(x), P(p + "attn.to_q.weight")), float(1.0 / std::sqrt(double(cfg.dim_head))));
        Var kv = kvs.size() == 1 ? kvs[0] : concat(kvs, 1);
        const SpanMask span{cfg.adapt_span ? P(p + "attn.span") : Var(), &distance, cfg.mem_len, cfg.adapt_span_ramp};
        x = add(x, linear(attention(q, {{kv, 0, now - first}}, table, P("pos_bias.weight"), cfg.heads, 0.f, nullptr,
                                    nullptr, cfg.adapt_span ? &span : nullptr),
                          P(p + "attn.to_out.weight"), P(p + "attn.to_out.bias")));
      }
      outs.push_back(x);
    }
    const int64_t keep = std::min(cfg.mem_len, m + T);
    r.state.emplace_back(inputs.end() - keep, inputs.end());
    h = concat(outs, 1);
    if (cfg.cross_attend) {
      Var cq = scale(linear(layernorm(h, P(p + "cross_norm.weight"), P(p + "cross_norm.bias")), P(p + "cross_attn.to_q.weight")),
                     float(1.0 / std::sqrt(double(cfg.dim_head))));
      std::vector<int32_t> all(size_t(T * 3), 0);
      h = add(h, linear(attention(cq, {{linear(ctx, P(p + "cross_attn.to_kv.weight")), 0, 3}}, all, Var(), cfg.heads),
                        P(p + "cross_attn.to_out.weight"), P(p + "cross_attn.to_out.bias")));
    }
    Var u = linear(layernorm(h, P(p + "ff_norm.weight"), P(p + "ff_norm.bias")), P(p + "ff.w_in.weight"), P(p + "ff.w_in.bias"));
    h = add(h, linear(geglu(u), P(p + "ff.w_out.weight"), P(p + "ff.w_out.bias")));
  }
  r.logits = linear(layernorm(h, P("out_norm.weight"), P("out_norm.bias")), P("to_logits.weight"), P("to_logits.bias"));
  r.loss = cross_entropy(r.logits, c.targets.data());
  return r;
}

ForwardOutput fast_xl(Model& model, Call& c, State* state = nullptr) {
  State local;
  if (!state) state = &local;
  if (c.m) state->memory.assign(Tensor{c.memory.data(), Shape{2, c.B, c.m, 6}, Device::CPU});
  return model.forward(c.tokens.data(), c.B, c.T, state, {context_of(model, c), c.targets.data()});
}

std::vector<float> values(Var v) { return std::vector<float>(v.data(), v.data() + v.value().numel()); }

double rel_diff(const std::vector<float>& a, const std::vector<float>& b) {
  REQUIRE(a.size() == b.size());
  double d = 0, n = 0;
  for (size_t i = 0; i < a.size(); ++i) d += (double(a[i]) - b[i]) * (double(a[i]) - b[i]), n += double(b[i]) * b[i];
  return std::sqrt(d) / std::max(std::sqrt(n), 1e-12);
}

void agrees_with_reference(bool cross, int64_t m, int64_t T, bool span = false, int64_t mem_len = 4,
                           float span_scale = 1.f) {
  ModelConfig cfg = span ? with_span(tiny_xl(cross)) : tiny_xl(cross);
  cfg.mem_len = mem_len;
  TransformerXL model(cfg);
  fill_normal(model.params().values().data(), int64_t(model.params().numel()), 5, 0.4f);
  if (span) set_spans(model, span_scale);
  Call c = make_call(m, 11, T);
  tape().reset();
  model.params().zero_grad();
  State state;
  ForwardOutput f = fast_xl(model, c, &state);
  tape().backward(f.loss);
  const std::vector<float> fast_logits = values(f.logits), fast_grads = model.params().grads();
  const float fast_loss = f.loss.data()[0];
  const std::vector<float> fast_state = state.memory.values();
  tape().reset();
  model.params().zero_grad();
  RefXL r = reference_xl(model, c);
  tape().backward(r.loss);
  CHECK(fast_loss == doctest::Approx(r.loss.data()[0]).epsilon(1e-5));
  CHECK(rel_diff(fast_logits, values(r.logits)) < 1e-5);
  CHECK(rel_diff(fast_grads, model.params().grads()) < 1e-4);
  // The state: per layer, the last min(mem_len, m + T) inputs of that layer.
  const int64_t keep = std::min<int64_t>(mem_len, m + T);
  CHECK(state.memory.shape() == Shape{2, c.B, keep, 6});
  std::vector<float> ref_state;
  for (int64_t l = 0; l < 2; ++l)
    for (int64_t b = 0; b < c.B; ++b)
      for (int64_t j = 0; j < keep; ++j)
        for (int64_t k = 0; k < 6; ++k) ref_state.push_back(r.state[size_t(l)][size_t(j)].data()[b * 6 + k]);
  CHECK(rel_diff(fast_state, ref_state) < 1e-5);
}

}  // namespace

TEST_CASE("baseline: agrees with the naive reference, without and with a carried state") {
  agrees_with_reference(false, 0, 7);
  agrees_with_reference(false, 3, 7);
  agrees_with_reference(false, 4, 2);  // a short call: the state is mostly carried rows
}

TEST_CASE("baseline: cross attention agrees with the reference") { agrees_with_reference(true, 2, 5); }

TEST_CASE("baseline: an adaptive span agrees with the naive reference, without and with a carried state") {
  agrees_with_reference(false, 0, 7, true);
  agrees_with_reference(false, 3, 7, true);
  // Spans reaching 5 steps back of mem_len 8: the model reads only the state's last 5 rows
  // (Model::span_reach) and still returns the last 8 inputs of each layer as the state.
  agrees_with_reference(false, 7, 6, true, 8, 0.35f);
  agrees_with_reference(false, 2, 9, true, 8, 0.35f);
}

TEST_CASE("baseline gradcheck: the whole model by central differences, with a carried state, with and without a span") {
  for (bool span : {false, true}) {
  INFO("adaptive span " << span);
  TransformerXL model(span ? with_span(tiny_xl(false)) : tiny_xl(false));
  fill_normal(model.params().values().data(), int64_t(model.params().numel()), 7, 0.4f);
  if (span) set_spans(model);
  Call c = make_call(3, 13, 5);
  tape().reset();
  model.params().zero_grad();
  tape().backward(fast_xl(model, c).loss);
  const std::vector<float> grads = model.params().grads();
  const double rel = parameter_grad_error(model.params().values(), grads, [&] {
    NoGradScope ng;
    tape().reset();
    return double(fast_xl(model, c).loss.data()[0]);
  });
  INFO("relative error " << rel);
  CHECK(rel < 2e-3);
  }
}

TEST_CASE("baseline: one call equals two calls with the state carried") {
  TransformerXL model(tiny_xl(false));
  fill_normal(model.params().values().data(), int64_t(model.params().numel()), 4, 0.4f);
  Call whole = make_call(0, 19, 8);
  NoGradScope ng;
  tape().reset();
  State one;
  const std::vector<float> logits1 = values(fast_xl(model, whole, &one).logits);
  Call a = whole, b = whole;
  a.T = b.T = 4;
  a.tokens.clear(), b.tokens.clear(), a.targets.clear(), b.targets.clear();
  for (int64_t r = 0; r < 2; ++r)
    for (int64_t t = 0; t < 8; ++t) {
      (t < 4 ? a : b).tokens.push_back(whole.tokens[size_t(r * 8 + t)]);
      (t < 4 ? a : b).targets.push_back(whole.targets[size_t(r * 8 + t)]);
    }
  State two;
  const std::vector<float> first = values(fast_xl(model, a, &two).logits);
  const std::vector<float> second = values(model.forward(b.tokens.data(), 2, 4, &two).logits);
  for (int64_t r = 0; r < 2; ++r)
    for (int64_t t = 0; t < 8; ++t)
      for (int64_t k = 0; k < 7; ++k) {
        const float got = t < 4 ? first[size_t((r * 4 + t) * 7 + k)] : second[size_t((r * 4 + t - 4) * 7 + k)];
        CHECK(got == doctest::Approx(logits1[size_t((r * 8 + t) * 7 + k)]).epsilon(1e-5));
      }
  CHECK(rel_diff(two.memory.values(), one.memory.values()) < 1e-5);
}

TEST_CASE("baseline: parameter names follow MODEL.md") {
  TransformerXL model(tiny_xl(true));
  const ParamStore& ps = model.params();
  for (const char* gone : {"mem_norm.weight", "layer_weight", "shared_kv.weight"}) CHECK_FALSE(ps.has(gone));
  for (int l = 0; l < 2; ++l) {
    const std::string p = "layers." + std::to_string(l) + ".";
    CHECK(ps.get(p + "attn.to_kv.weight").shape() == Shape{12, 6});
    CHECK(ps.has(p + "cross_attn.to_kv.weight"));
  }
  CHECK(ps.names().front() == "token_emb.weight");
  CHECK(ps.names().back() == "to_logits.bias");
  CHECK(make_model(tiny_xl(false))->memory_shape(3, 2) == Shape{2, 3, 2, 6});
}

TEST_CASE("baseline: config keys that do not apply are errors naming the key") {
  auto parse = [](const std::string& extra) {
    YAML::Node root = YAML::Load("model:\n  type: transformer_xl\n  num_tokens: 7\n  dim: 8\n  depth: 1\n  mem_len: 4\n" + extra);
    ConfigSection s(root["model"], "m.yaml", "model");
    return parse_model_config(s);
  };
  CHECK_FALSE(parse("").shared_kv);  // each layer projects its own memory
  CHECK_THROWS_WITH_AS(parse("  seq_len: 2\n"), doctest::Contains("model.seq_len: seq_len must be 1 for type transformer_xl"),
                       ConfigError);
  CHECK_THROWS_WITH_AS(parse("  shared_kv: true\n"), doctest::Contains("model.shared_kv: shared_kv does not apply"), ConfigError);
  CHECK_THROWS_WITH_AS(parse("  keep_last_hidden: true\n"), doctest::Contains("model.keep_last_hidden"), ConfigError);
  YAML::Node other = YAML::Load("model:\n  type: xl\n  num_tokens: 7\n  dim: 8\n  depth: 1\n  mem_len: 4\n");
  ConfigSection section(other["model"], "m.yaml", "model");
  CHECK_THROWS_WITH_AS(parse_model_config(section), doctest::Contains("model.type: type 'xl' is not one of feedback, transformer_xl"),
                       ConfigError);
  TransformerXL model(tiny_xl(false));
  Call c = make_call(0, 3, 4);
  CHECK_THROWS_WITH_AS(model.forward(c.tokens.data(), 2, 4, nullptr, {Var(), c.targets.data(), DetachPolicy::parse("all", 1)}),
                       doctest::Contains("detachment policies do not apply"), std::invalid_argument);
}
