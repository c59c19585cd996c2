// AdamW against hand-computed steps; the learning-rate schedule and clipping.
#include <doctest/doctest.h>

#include <cmath>

#include "autograd/params.hpp"
#include "models/model.hpp"
#include "train/optimizer.hpp"

using namespace fbt;

TEST_CASE("adamw: one parameter against hand-computed steps") {
  ParamStore ps;
  Var w = ps.add("layers.0.attn.to_q.weight", {1, 2}, ParamRole::Matrix);
  Var b = ps.add("layers.0.attn.to_out.bias", {1}, ParamRole::Bias);
  ps.finalize();
  w.data()[0] = 1.f, w.data()[1] = -2.f, b.data()[0] = 0.5f;
  AdamW opt(ps, AdamWConfig{0.9, 0.999, 1e-8, 0.1});
  double p = 1.0, m = 0, v = 0, q = 0.5, mq = 0, vq = 0;
  const double lr = 0.01;
  for (int t = 1; t <= 3; ++t) {
    const double g = 0.3 * t, gq = -0.2;
    ps.grads()[0] = float(g), ps.grads()[1] = 0.f, ps.grads()[2] = float(gq);
    opt.step(lr);
    p -= lr * 0.1 * p;  // decoupled decay on the matrix
    m = 0.9 * m + 0.1 * g;
    v = 0.999 * v + 0.001 * g * g;
    p -= lr * (m / (1 - std::pow(0.9, t))) / (std::sqrt(v / (1 - std::pow(0.999, t))) + 1e-8);
    mq = 0.9 * mq + 0.1 * gq;  // no decay on the bias
    vq = 0.999 * vq + 0.001 * gq * gq;
    q -= lr * (mq / (1 - std::pow(0.9, t))) / (std::sqrt(vq / (1 - std::pow(0.999, t))) + 1e-8);
    CHECK(w.data()[0] == doctest::Approx(p).epsilon(1e-6));
    CHECK(b.data()[0] == doctest::Approx(q).epsilon(1e-6));
  }
  CHECK(w.data()[1] == doctest::Approx(-2.0 * std::pow(1 - lr * 0.1, 3)).epsilon(1e-6));  // decay only
  // Which of a model's parameters decay: the roles they were registered with.
  ModelConfig mc;
  mc.num_tokens = 11, mc.dim = 8, mc.depth = 2, mc.heads = 2, mc.dim_head = 4, mc.mem_len = 4;
  const auto model = make_model(mc);
  std::vector<std::string> decaying;
  for (size_t i = 0; i < model->params().size(); ++i)
    if (weight_decays(model->params().role(i))) decaying.push_back(model->params().names()[i]);
  CHECK(decaying == std::vector<std::string>{"token_emb.weight", "shared_kv.weight", "layers.0.attn.to_q.weight",
                                             "layers.0.attn.to_out.weight", "layers.0.ff.w_in.weight",
                                             "layers.0.ff.w_out.weight", "layers.1.attn.to_q.weight",
                                             "layers.1.attn.to_out.weight", "layers.1.ff.w_in.weight",
                                             "layers.1.ff.w_out.weight", "to_logits.weight"});
}

TEST_CASE("schedule: warmup then cosine to min_lr and clipping") {
  CHECK(learning_rate(0, 10, 100, 1.0, 0.1, true) == doctest::Approx(0.1));
  CHECK(learning_rate(9, 10, 100, 1.0, 0.1, true) == doctest::Approx(1.0));
  CHECK(learning_rate(10, 10, 100, 1.0, 0.1, true) == doctest::Approx(1.0));
  CHECK(learning_rate(55, 10, 100, 1.0, 0.1, true) == doctest::Approx(0.55));
  CHECK(learning_rate(100, 10, 100, 1.0, 0.1, true) == doctest::Approx(0.1));
  CHECK(learning_rate(70, 10, 100, 1.0, 0.1, false) == doctest::Approx(1.0));
  ParamStore ps;
  ps.add("a", {2}, ParamRole::Bias);
  ps.finalize();
  ps.grads()[0] = 3.f, ps.grads()[1] = 4.f;
  CHECK(clip_grad_norm(ps, 1.0) == doctest::Approx(5.0));
  CHECK(ps.grads()[0] == doctest::Approx(0.6).epsilon(1e-5));
  CHECK(clip_grad_norm(ps, 0.0) == doctest::Approx(1.0).epsilon(1e-5));
}
