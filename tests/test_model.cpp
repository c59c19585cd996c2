// The Feedback Transformer against MODEL.md: against a naive reference built from primitives
// (values and gradients under every policy), whole-model gradient checks, state carrying,
// policies leaving values alone, packed weights, kept projections, bucketing, names, init.
#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>

#include "gradcheck.hpp"
#include "util/config_section.hpp"
#include "reference_model.hpp"

using namespace fbt;
using namespace fbt::testing;

namespace {

ModelConfig tiny(int64_t seq_len, bool shared_kv, bool keep_last, bool cross) {
  ModelConfig c = tiny_model_config();
  c.seq_len = seq_len;
  c.shared_kv = shared_kv;
  c.keep_last_hidden = keep_last;
  c.cross_attend = cross;
  return c;
}

// Random weights large enough that every path matters (the training init is too gentle).
void randomize(FeedbackTransformer& m, uint64_t seed) {
  fill_normal(m.params().values().data(), int64_t(m.params().numel()), seed, 0.4f);
}

struct Batch {
  int64_t B = 2, T = 7, m = 0;
  std::vector<int32_t> tokens, targets;
  std::vector<float> memory, context;
  Tensor mem_tensor() { return Tensor{memory.data(), Shape{B, m, 6}, Device::CPU}; }
};

Batch make_batch(int64_t m, uint64_t seed, int64_t T = 7) {
  Batch b;
  b.T = T;
  b.m = m;
  Rng r(seed);
  for (int64_t i = 0; i < b.B * T; ++i) {
    b.tokens.push_back(int32_t(r.uniform() * 7));
    b.targets.push_back(int32_t(r.uniform() * 7));
  }
  b.memory.resize(size_t(b.B * m * 6));
  fill_normal(b.memory.data(), int64_t(b.memory.size()), seed + 1);
  b.context.resize(size_t(b.B * 3 * 6));
  fill_normal(b.context.data(), int64_t(b.context.size()), seed + 2);
  return b;
}

struct Result {
  std::vector<float> logits, memory, grads;
  float loss = 0;
};

// One call with a fresh state holding `mem` (or none).
ForwardOutput call(FeedbackTransformer& model, const int32_t* tokens, int64_t B, int64_t T, const Tensor* mem,
                   Var ctx = Var(), const int32_t* targets = nullptr, const DetachPolicy& pol = {}) {
  State state;
  if (mem) state.memory.assign(*mem);
  return model.forward(tokens, B, T, &state, {ctx, targets, pol});
}

Result run_fast(FeedbackTransformer& model, Batch& b, const DetachPolicy& pol) {
  tape().reset();
  model.params().zero_grad();
  Tensor mt = b.mem_tensor();
  Var ctx = model.config().cross_attend ? tape().leaf_copy(Tensor{b.context.data(), Shape{b.B, 3, 6}, Device::CPU}) : Var();
  ForwardOutput o = call(model, b.tokens.data(), b.B, b.T, b.m ? &mt : nullptr, ctx, b.targets.data(), pol);
  tape().backward(o.loss);
  Result r;
  r.logits.assign(o.logits.data(), o.logits.data() + o.logits.value().numel());
  r.memory.assign(o.memory.data, o.memory.data + o.memory.numel());
  r.grads = model.params().grads();
  r.loss = o.loss.data()[0];
  return r;
}

Result run_reference(FeedbackTransformer& model, Batch& b, const DetachPolicy& pol) {
  tape().reset();
  model.params().zero_grad();
  Tensor mt = b.mem_tensor();
  Var ctx = model.config().cross_attend ? tape().leaf_copy(Tensor{b.context.data(), Shape{b.B, 3, 6}, Device::CPU}) : Var();
  RefOutput o = reference_forward(model, b.tokens, b.targets, b.B, b.T, b.m ? &mt : nullptr, ctx, pol);
  tape().backward(o.loss);
  Result r;
  r.logits.assign(o.logits.data(), o.logits.data() + o.logits.value().numel());
  const int64_t keep = int64_t(o.memory.size());
  r.memory.resize(size_t(b.B * keep * 6));
  for (int64_t j = 0; j < keep; ++j)
    for (int64_t bb = 0; bb < b.B; ++bb)
      for (int64_t k = 0; k < 6; ++k) r.memory[size_t((bb * keep + j) * 6 + k)] = o.memory[size_t(j)].data()[bb * 6 + k];
  r.grads = model.params().grads();
  r.loss = o.loss.data()[0];
  return r;
}

double rel_diff(const std::vector<float>& a, const std::vector<float>& b) {
  REQUIRE(a.size() == b.size());
  double d = 0, n = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    d += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    n += double(b[i]) * b[i];
  }
  return std::sqrt(d) / std::max(std::sqrt(n), 1e-12);
}

void agree_with_reference(const ModelConfig& cfg, int64_t m, const std::vector<std::string>& policies, int64_t T = 7,
                          float span_scale = 1.f) {
  FeedbackTransformer model(cfg);
  randomize(model, 5);
  if (cfg.adapt_span) set_spans(model, span_scale);
  Batch b = make_batch(m, 11, T);
  for (const std::string& p : policies) {
    INFO("policy " << p);
    DetachPolicy pol = DetachPolicy::parse(p, cfg.seq_len);
    Result f = run_fast(model, b, pol), r = run_reference(model, b, pol);
    CHECK(f.loss == doctest::Approx(r.loss).epsilon(1e-5));
    CHECK(rel_diff(f.logits, r.logits) < 1e-5);
    CHECK(rel_diff(f.memory, r.memory) < 1e-5);
    CHECK(rel_diff(f.grads, r.grads) < 1e-4);
    // Per-parameter too: a small tensor's error could hide in the global norm.
    const ParamStore& ps = model.params();
    for (size_t i = 0; i < ps.size(); ++i) {
      const size_t off = ps.offset(i), len = size_t(ps.at(i).value().numel());
      std::vector<float> gf(f.grads.begin() + long(off), f.grads.begin() + long(off + len));
      std::vector<float> gr(r.grads.begin() + long(off), r.grads.begin() + long(off + len));
      double norm = 0;
      for (float v : gr) norm += double(v) * v;
      INFO("parameter " << ps.names()[i]);
      if (norm > 1e-12) CHECK(rel_diff(gf, gr) < 1e-4);
    }
  }
}

const std::vector<std::string> kPolicies1 = {"none", "all", "every:2", "every:3", "horizon:1", "horizon:3"};
const std::vector<std::string> kPolicies3 = {"none", "all", "every:3", "horizon:3", "horizon:6"};

// Whole-model central differences on the mean loss, policy none (the true gradient).
void model_gradcheck(const ModelConfig& cfg, int64_t m) {
  FeedbackTransformer model(cfg);
  randomize(model, 7);
  if (cfg.adapt_span) set_spans(model);
  Batch b = make_batch(m, 13, 5);
  Result r = run_fast(model, b, DetachPolicy{});
  const double rel = parameter_grad_error(model.params().values(), r.grads, [&] {
    NoGradScope ng;
    tape().reset();
    Tensor mt = b.mem_tensor();
    Var ctx = cfg.cross_attend ? tape().leaf_copy(Tensor{b.context.data(), Shape{b.B, 3, 6}, Device::CPU}) : Var();
    return double(call(model, b.tokens.data(), b.B, b.T, b.m ? &mt : nullptr, ctx, b.targets.data()).loss.data()[0]);
  });
  INFO("relative error " << rel);
  CHECK(rel < 2e-3);
}

}  // namespace

TEST_CASE("model: seq_len 1 agrees with the naive reference under every policy") {
  agree_with_reference(tiny(1, true, false, false), 0, kPolicies1);
}

TEST_CASE("model: seq_len 1 with carried memory agrees with the reference") {
  agree_with_reference(tiny(1, true, false, false), 3, kPolicies1);
}

TEST_CASE("model: seq_len 1 over a long call agrees with the reference under every policy") {
  // 40 steps, spans sliding over many of them and over the carried rows; shared and per-layer
  // projections.
  const std::vector<std::string> policies = {"none", "all", "every:5", "every:16", "horizon:2", "horizon:17"};
  agree_with_reference(tiny(1, true, false, false), 3, policies, 40);
  agree_with_reference(tiny(1, false, false, false), 0, policies, 40);
  ModelConfig long_memory = tiny(1, false, false, false);
  long_memory.mem_len = 24;  // spans that reach across blocks
  agree_with_reference(long_memory, 5, policies, 40);
}

TEST_CASE("model: windows of 3 agree with the reference under every policy") {
  agree_with_reference(tiny(3, true, false, false), 0, kPolicies3);
  agree_with_reference(tiny(3, true, false, false), 4, kPolicies3);
}

TEST_CASE("model: unshared key value projections agree with the reference") {
  agree_with_reference(tiny(1, false, false, false), 2, kPolicies1);
  agree_with_reference(tiny(3, false, false, false), 1, kPolicies3);
}

TEST_CASE("model: keep_last_hidden agrees with the reference") {
  agree_with_reference(tiny(1, true, true, false), 1, kPolicies1);
  agree_with_reference(tiny(3, false, true, false), 0, kPolicies3);
}

TEST_CASE("model: cross attention agrees with the reference") {
  agree_with_reference(tiny(1, true, false, true), 2, kPolicies1);
  agree_with_reference(tiny(3, false, false, true), 0, kPolicies3);
}

TEST_CASE("model: an adaptive span agrees with the reference under every policy, single steps and windows") {
  agree_with_reference(with_span(tiny(1, true, false, false)), 0, kPolicies1, 12);
  agree_with_reference(with_span(tiny(1, false, false, false)), 3, kPolicies1);
  agree_with_reference(with_span(tiny(3, true, false, false)), 2, kPolicies3);
  // Spans of at most 2.3 steps with ramp 2 reach 5 steps back of mem_len 8: the model reads only
  // those rows (Model::span_reach), the reference reads all of them.
  ModelConfig longer = with_span(tiny(1, true, false, false));
  longer.mem_len = 8;
  FeedbackTransformer probe(longer);
  set_spans(probe, 0.35f);
  REQUIRE(probe.span_reach() == 5);
  agree_with_reference(longer, 6, kPolicies1, 12, 0.35f);
  longer.seq_len = 3;
  agree_with_reference(longer, 6, kPolicies3, 12, 0.35f);
}

// The single-query path's key/value gradient waits in a queue (ops.hpp, KVGradQueue) and is
// added later in batches: it must give the bits of adding each step's share at once, whatever the
// policy, the span, the dropout, the carried rows and recomputation.
TEST_CASE("model: queued key/value gradients are the bits of adding them at once") {
  struct Variant {
    const char* name;
    bool shared, span, dropout, recompute;
    int64_t carried;
  };
  for (const Variant& v : {Variant{"shared", true, false, false, false, 0}, Variant{"per-layer, carried", false, false, false, false, 7},
                           Variant{"span", true, true, false, false, 5}, Variant{"dropout", false, false, true, false, 3},
                           Variant{"recompute, dropout, span", true, true, true, true, 4}}) {
    ModelConfig cfg = tiny(1, v.shared, false, false);
    cfg.mem_len = 30;  // keys older than the queue's batch of 16 steps: most of them wait
    if (v.span) cfg = with_span(cfg);
    if (v.dropout) cfg.attn_dropout = 0.3f;
    FeedbackTransformer model(cfg);
    randomize(model, 9);
    if (v.span) set_spans(model, 0.6f);
    Batch b = make_batch(v.carried, 31, 45);
    for (const std::string policy : {"none", "all", "every:7", "horizon:20", "horizon:3"}) {
      INFO(v.name << ", policy " << policy);
      const DetachPolicy pol = DetachPolicy::parse(policy, 1);
      auto run = [&] {
        tape().reset();
        model.params().zero_grad();
        Tensor mt = b.mem_tensor();
        Rng rng(77);
        State state;
        if (b.m) state.memory.assign(mt);
        ForwardOutput o = model.forward(b.tokens.data(), b.B, b.T, &state,
                                        {Var(), b.targets.data(), pol, /*train=*/v.dropout, &rng, v.recompute});
        tape().backward(o.loss);
        return model.params().grads();
      };
      const std::vector<float> queued = run();
      std::vector<float> direct;
      {
        NoKVGradDeferral off;
        direct = run();
      }
      REQUIRE(queued.size() == direct.size());
      CHECK(std::memcmp(queued.data(), direct.data(), sizeof(float) * queued.size()) == 0);
    }
  }
}

TEST_CASE("model gradcheck: adaptive span, single steps and windows") {
  model_gradcheck(with_span(tiny(1, true, false, false)), 2);
  model_gradcheck(with_span(tiny(2, false, false, false)), 0);
}

TEST_CASE("model gradcheck: seq_len 1 shared kv") { model_gradcheck(tiny(1, true, false, false), 0); }
TEST_CASE("model gradcheck: seq_len 1 with carried memory") { model_gradcheck(tiny(1, true, false, false), 3); }
TEST_CASE("model gradcheck: windows of 2 unshared kv") { model_gradcheck(tiny(2, false, false, false), 2); }
TEST_CASE("model gradcheck: keep_last_hidden") { model_gradcheck(tiny(3, true, true, false), 1); }
TEST_CASE("model gradcheck: cross attention") { model_gradcheck(tiny(2, true, false, true), 1); }

TEST_CASE("model: policies change gradients and never values") {
  ModelConfig cfg = tiny(1, true, false, false);
  FeedbackTransformer model(cfg);
  randomize(model, 3);
  Batch b = make_batch(2, 17);
  Result base = run_fast(model, b, DetachPolicy{});
  bool some_grad_differs = false;
  for (const std::string& p : kPolicies1) {
    Result r = run_fast(model, b, DetachPolicy::parse(p, 1));
    CHECK(r.logits == base.logits);
    CHECK(r.memory == base.memory);
    CHECK(r.loss == base.loss);
    if (p != "none") some_grad_differs = some_grad_differs || rel_diff(r.grads, base.grads) > 1e-3;
  }
  CHECK(some_grad_differs);
}

TEST_CASE("model: one call equals two calls with the state carried") {
  for (int64_t seq_len : {1, 2}) {
    ModelConfig cfg = tiny(seq_len, seq_len == 1, false, false);
    FeedbackTransformer model(cfg);
    randomize(model, 4);
    Batch whole = make_batch(0, 19, 8);
    NoGradScope ng;
    tape().reset();
    ForwardOutput one = call(model, whole.tokens.data(), 2, 8, nullptr, Var(), whole.targets.data());
    std::vector<float> logits1(one.logits.data(), one.logits.data() + one.logits.value().numel());
    std::vector<float> mem1(one.memory.data, one.memory.data + one.memory.numel());
    // First 4 steps, then the last 4 from the returned state.
    std::vector<int32_t> a, b;
    for (int64_t r = 0; r < 2; ++r)
      for (int64_t t = 0; t < 8; ++t) (t < 4 ? a : b).push_back(whole.tokens[size_t(r * 8 + t)]);
    ForwardOutput first = model.forward(a.data(), 2, 4, nullptr);
    std::vector<float> state(first.memory.data, first.memory.data + first.memory.numel());
    Tensor st{state.data(), first.memory.shape, Device::CPU};
    ForwardOutput second = call(model, b.data(), 2, 4, &st);
    for (int64_t r = 0; r < 2; ++r)
      for (int64_t t = 0; t < 8; ++t)
        for (int64_t v = 0; v < 7; ++v) {
          const float expect = logits1[size_t((r * 8 + t) * 7 + v)];
          const float got = t < 4 ? first.logits.data()[(r * 4 + t) * 7 + v] : second.logits.data()[(r * 4 + t - 4) * 7 + v];
          CHECK(got == doctest::Approx(expect).epsilon(1e-5));
        }
    REQUIRE(second.memory.numel() == int64_t(mem1.size()));
    for (size_t i = 0; i < mem1.size(); ++i) CHECK(second.memory.data[i] == doctest::Approx(mem1[i]).epsilon(1e-5));
  }
}

TEST_CASE("model: frozen weights (packed step products) give the plain path's values, and no stale copy") {
  ModelConfig cfg = tiny(1, false, false, true);
  FeedbackTransformer model(cfg);
  randomize(model, 8);
  Batch b = make_batch(2, 23, 3);  // 3 windows: forward does not freeze by itself
  Var ctx = tape().leaf_copy(Tensor{b.context.data(), Shape{2, 3, 6}, Device::CPU});
  Tensor mem = b.mem_tensor();
  NoGradScope ng;
  auto logits = [&] {
    ForwardOutput o = call(model, b.tokens.data(), 2, 3, &mem, ctx);
    return std::vector<float>(o.logits.data(), o.logits.data() + o.logits.value().numel());
  };
  const std::vector<float> plain = logits();
  std::vector<float> frozen;
  {
    FrozenWeights scope(model.params());
    CHECK(model.step_packs().of(model.params().get("layers.0.ff.w_in.weight")).fwd != nullptr);
    {
      FrozenWeights inner(model.params());  // nested: reuses the outer copies
    }
    CHECK(model.params().frozen());
    frozen = logits();
  }
  CHECK_FALSE(model.params().frozen());
  CHECK(model.step_packs().of(model.params().get("layers.0.ff.w_in.weight")).fwd == nullptr);
  REQUIRE(frozen.size() == plain.size());
  for (size_t i = 0; i < plain.size(); ++i) CHECK(frozen[i] == doctest::Approx(plain[i]).epsilon(1e-5));
  // A weight changed after the scope is read as changed (the transposed copy is gone).
  model.params().get("layers.1.ff.w_out.weight").data()[0] += 1.f;
  const std::vector<float> changed = logits();
  {
    FrozenWeights scope(model.params());
    const std::vector<float> changed_frozen = logits();
    for (size_t i = 0; i < plain.size(); ++i) CHECK(changed_frozen[i] == doctest::Approx(changed[i]).epsilon(1e-5));
  }
  CHECK(changed != plain);
}

TEST_CASE("model: the projected memory is reused within a freeze, and only there") {
  for (auto [seq_len, shared] : {std::pair<int64_t, bool>{1, false}, {1, true}, {2, false}}) {
    ModelConfig cfg = tiny(seq_len, shared, false, false);
    FeedbackTransformer model(cfg);
    randomize(model, 12);
    Batch first = make_batch(0, 31, 3), second = make_batch(0, 32, 2);
    NoGradScope ng;
    auto logits = [](const ForwardOutput& o) {
      return std::vector<float>(o.logits.data(), o.logits.data() + o.logits.value().numel());
    };
    // Reference: the second call projects the carried memory itself.
    ForwardOutput a = model.forward(first.tokens.data(), 2, 3, nullptr);
    std::vector<float> state(a.memory.data, a.memory.data + a.memory.numel());
    Tensor st{state.data(), a.memory.shape, Device::CPU};
    const std::vector<float> expect = logits(call(model, second.tokens.data(), 2, 2, &st));

    State kept;
    kept.keep_projection = true;
    {
      FrozenWeights frozen(model.params());
      model.forward(first.tokens.data(), 2, 3, &kept);
      CHECK(kept.projection.freeze_id == model.params().freeze_id());
      CHECK(kept.projection.rows == 3);
      REQUIRE(kept.projection.kv.size() == (shared ? 1u : 2u));
      State carried = kept;
      const std::vector<float> got = logits(model.forward(second.tokens.data(), 2, 2, &carried));
      REQUIRE(got.size() == expect.size());
      for (size_t i = 0; i < got.size(); ++i) CHECK(got[i] == doctest::Approx(expect[i]).epsilon(1e-5));
      // A projection of another shape within the same freeze is a caller's error.
      State wrong = kept;
      wrong.projection.rows = 1;
      CHECK_THROWS_WITH_AS(model.forward(second.tokens.data(), 2, 2, &wrong), doctest::Contains("projected memory"),
                           std::invalid_argument);
    }
    // Outside a freeze nothing is kept; a projection from an earlier freeze is not used once
    // the weights have changed: the result follows the new weights.
    State loose;
    loose.keep_projection = true;
    model.forward(first.tokens.data(), 2, 3, &loose);
    CHECK(loose.projection.freeze_id == 0);
    model.params().get("mem_norm.bias").data()[0] += 0.5f;
    const std::vector<float> changed = logits(call(model, second.tokens.data(), 2, 2, &st));
    FrozenWeights frozen(model.params());
    State stale_state = kept;
    const std::vector<float> stale = logits(model.forward(second.tokens.data(), 2, 2, &stale_state));
    for (size_t i = 0; i < stale.size(); ++i) CHECK(stale[i] == doctest::Approx(changed[i]).epsilon(1e-5));
    CHECK(changed != expect);
  }
}

TEST_CASE("model: the state keeps the last mem_len vectors") {
  ModelConfig cfg = tiny(1, true, false, false);
  FeedbackTransformer model(cfg);
  Batch b = make_batch(0, 1, 2);
  NoGradScope ng;
  tape().reset();
  CHECK(model.forward(b.tokens.data(), 2, 2, nullptr).memory.shape == Shape{2, 2, 6});
  Batch c = make_batch(0, 1, 9);
  CHECK(model.forward(c.tokens.data(), 2, 9, nullptr).memory.shape == Shape{2, 4, 6});
}

TEST_CASE("model: T5 buckets") {
  CHECK(FeedbackTransformer::bucket(1, 32, 128) == 1);
  CHECK(FeedbackTransformer::bucket(15, 32, 128) == 15);
  CHECK(FeedbackTransformer::bucket(16, 32, 128) == 16);
  CHECK(FeedbackTransformer::bucket(20, 32, 128) == 17);
  CHECK(FeedbackTransformer::bucket(127, 32, 128) == 31);
  CHECK(FeedbackTransformer::bucket(1000, 32, 128) == 31);
  for (int64_t d = 1; d < 300; ++d) CHECK(FeedbackTransformer::bucket(d, 6, 9) == t5_bucket(d, 6, 9));
}

TEST_CASE("model: parameter names and shapes follow MODEL.md") {
  ModelConfig cfg = tiny(1, false, false, true);
  FeedbackTransformer model(cfg);
  const ParamStore& ps = model.params();
  CHECK(ps.get("token_emb.weight").shape() == Shape{7, 6});
  CHECK(ps.get("pos_bias.weight").shape() == Shape{6, 2});
  CHECK(ps.get("layers.1.attn.to_kv.weight").shape() == Shape{12, 6});
  CHECK_FALSE(ps.has("shared_kv.weight"));
  CHECK(ps.get("layer_weight").shape() == Shape{3});
  CHECK(ps.get("layers.0.attn.to_out.weight").shape() == Shape{6, 6});
  CHECK(ps.get("layers.0.cross_attn.to_kv.weight").shape() == Shape{12, 6});
  CHECK(ps.get("layers.1.ff.w_in.weight").shape() == Shape{24, 6});
  CHECK(ps.get("layers.1.ff.w_out.weight").shape() == Shape{6, 12});
  CHECK(ps.get("to_logits.bias").shape() == Shape{7});
  FeedbackTransformer shared(tiny(1, true, false, false));
  CHECK(shared.params().get("shared_kv.weight").shape() == Shape{12, 6});
  CHECK_FALSE(shared.params().has("layers.0.cross_norm.weight"));
  CHECK_FALSE(shared.params().has("layers.0.attn.to_kv.weight"));
}

TEST_CASE("model: initialization is seeded and documented") {
  FeedbackTransformer a(tiny(1, true, false, false)), b(tiny(1, true, false, false));
  a.init(1);
  b.init(1);
  CHECK(a.params().values() == b.params().values());
  b.init(2);
  CHECK(a.params().values() != b.params().values());
  Var lw = a.params().get("layer_weight");
  for (int i = 0; i < 3; ++i) CHECK(lw.data()[i] == 1.f);
  CHECK(a.params().get("mem_norm.weight").data()[0] == 1.f);
  CHECK(a.params().get("to_logits.bias").data()[0] == 0.f);
}

TEST_CASE("model: the gpt2 and torch initializations draw what ARCHITECTURE.md says") {
  ModelConfig c;
  c.num_tokens = 256, c.dim = 64, c.depth = 2, c.heads = 2, c.dim_head = 32, c.mem_len = 4;
  auto stats = [](const Var& v) {  // mean, standard deviation, largest magnitude
    const float* x = v.data();
    const int64_t n = v.value().numel();
    double sum = 0, sq = 0, top = 0;
    for (int64_t k = 0; k < n; ++k) sum += x[k], sq += double(x[k]) * x[k], top = std::max(top, double(std::fabs(x[k])));
    const double mean = sum / double(n);
    return std::array<double, 3>{mean, std::sqrt(sq / double(n) - mean * mean), top};
  };
  for (const char* type : {"feedback", "transformer_xl"}) {
    c.type = type;
    c.shared_kv = c.type == "feedback";
    auto m = make_model(c, false);
    m->init(5, "gpt2");
    CHECK(stats(m->params().get("token_emb.weight"))[1] == doctest::Approx(0.02).epsilon(0.05));
    CHECK(stats(m->params().get("layers.0.ff.w_out.weight"))[1] == doctest::Approx(0.02 / 2).epsilon(0.05));
    m->init(5, "torch");
    CHECK(stats(m->params().get("token_emb.weight"))[1] == doctest::Approx(1.0).epsilon(0.05));
    // uniform(+-1/sqrt(fan_in)): standard deviation 1/sqrt(3 fan_in), nothing past the bound
    for (const auto& [name, fan_in] : {std::pair<const char*, double>{"layers.0.attn.to_q.weight", 64},
                                       {"layers.1.attn.to_out.weight", 64},
                                       {"layers.1.ff.w_in.weight", 64},
                                       {"layers.0.ff.w_out.weight", 256},
                                       {"to_logits.weight", 64}}) {
      const auto s = stats(m->params().get(name));
      CHECK(s[1] == doctest::Approx(1 / std::sqrt(3 * fan_in)).epsilon(0.05));
      CHECK(s[2] <= 1 / std::sqrt(fan_in));
      CHECK(std::fabs(s[0]) < 0.1 * s[1]);
    }
    CHECK(stats(m->params().get("pos_bias.weight"))[1] == doctest::Approx(0.02).epsilon(0.3));  // 64 draws
    CHECK(stats(m->params().get("layers.0.ff.w_in.bias"))[2] == 0);
    CHECK(stats(m->params().get("out_norm.weight"))[0] == 1);
  }
  CHECK_THROWS_WITH_AS(make_model(c, false)->init(1, "xavier"), "'xavier' is not one of gpt2, torch", std::invalid_argument);
}
