// Adaptive attention span (MODEL.md "Adaptive attention span") beyond the kernel and the models'
// references (test_kernels, test_model, test_baseline): what the distances mean, the training
// term and clamp, the config's rules, and what files carry.
#include <doctest/doctest.h>
#include <fmt/format.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "gradcheck.hpp"
#include "models/weights.hpp"
#include "reference_model.hpp"
#include "run_fixture.hpp"
#include "train/loop.hpp"
#include "train/trainer.hpp"
#include "cli/plot.hpp"
#include "util/config_section.hpp"

using namespace fbt;
using namespace fbt::testing;

namespace {

std::vector<float> logits_of(Model& m, const std::vector<int32_t>& tokens, int64_t B, int64_t T) {
  NoGradScope ng;
  tape().reset();
  State state;
  Var l = m.forward(tokens.data(), B, T, &state).logits;
  return std::vector<float>(l.data(), l.data() + l.value().numel());
}

}  // namespace

// With ramp 1 and z mem_len = k a whole number, the mask is 1 up to distance k + 1 and 0 beyond:
// the model attends as one with mem_len k + 1 (the exact model and the baseline, whose keys are
// exactly the steps at most mem_len back). So the distances mean what MODEL.md says.
TEST_CASE("span: ramp 1 and a whole span of k steps attends as mem_len k + 1, in both families") {
  for (const char* type : {"feedback", "transformer_xl"})
    for (int k : {0, 1, 2}) {
      INFO(type << " k " << k);
      ModelConfig c = tiny_model_config(type);
      c.adapt_span = true, c.adapt_span_ramp = 1, c.mem_len = 4;
      auto spanned = make_model(c);
      fill_normal(spanned->params().values().data(), int64_t(spanned->params().numel()), 3, 0.4f);
      for (int64_t l = 0; l < c.depth; ++l) {
        Var z = spanned->params().get("layers." + std::to_string(l) + ".attn.span");
        for (int64_t h = 0; h < c.heads; ++h) z.data()[h] = float(k) / 4.f;
      }
      ModelConfig plain_cfg = tiny_model_config(type);
      plain_cfg.mem_len = k + 1;
      auto plain = make_model(plain_cfg);
      for (const std::string& name : plain->params().names()) {
        Var from = spanned->params().get(name), to = plain->params().get(name);
        std::copy_n(from.data(), from.value().numel(), to.data());
      }
      std::vector<int32_t> tokens;
      for (int i = 0; i < 2 * 9; ++i) tokens.push_back((i * 5 + 3) % 7);
      check_close(logits_of(*spanned, tokens, 2, 9), logits_of(*plain, tokens, 2, 9), 1e-5);
    }
}

TEST_CASE("span: off changes nothing: no parameter, no key in the weights' config, the same bytes") {
  ModelConfig c = tiny_model_config();
  auto m = make_model(c);
  for (const std::string& name : m->params().names()) CHECK(name.find("span") == std::string::npos);
  CHECK(model_config_to_json(c).find("adapt_span") == std::string::npos);
  CHECK(m->spans().empty());
  c.adapt_span = true, c.adapt_span_init = 0.25f;
  const std::string json = model_config_to_json(c);
  CHECK(json.find("\"adapt_span\":true") != std::string::npos);
  CHECK(model_config_from_json(json, "x").adapt_span_init == 0.25f);
  auto s = make_model(c);
  CHECK(s->params().get("layers.1.attn.span").shape() == Shape{2});
  CHECK(s->spans() == std::vector<std::vector<float>>{{1.f, 1.f}, {1.f, 1.f}});  // 0.25 x mem_len 4
}

TEST_CASE("span: config errors name the key") {
  auto parse = [](const std::string& extra) {
    YAML::Node root = YAML::Load("model:\n  num_tokens: 7\n  dim: 8\n  depth: 1\n  mem_len: 4\n" + extra);
    ConfigSection s(root["model"], "m.yaml", "model");
    return parse_model_config(s);
  };
  CHECK(parse("  adapt_span: true\n").adapt_span_ramp == 32);
  CHECK_THROWS_WITH_AS(parse("  adapt_span: true\n  adapt_span_ramp: 0\n"),
                       doctest::Contains("model.adapt_span_ramp: adapt_span_ramp must be in [1,"), ConfigError);
  CHECK_THROWS_WITH_AS(parse("  adapt_span: true\n  adapt_span_init: 1.5\n"),
                       doctest::Contains("model.adapt_span_init: adapt_span_init must be in [0, 1]"), ConfigError);
  CHECK_THROWS_WITH_AS(parse("  adapt_span_ramp: 8\n"),
                       doctest::Contains("model.adapt_span_ramp: adapt_span_ramp applies only with adapt_span: true"),
                       ConfigError);
  TempDir d;
  CHECK_THROWS_WITH_AS(load_run_config(write_config(d), {"train.adapt_span_loss=1e-6"}),
                       doctest::Contains("train.adapt_span_loss: needs model.adapt_span: true"), ConfigError);
  CHECK_THROWS_WITH_AS(load_run_config(write_config(d), {"model.adapt_span=true", "train.adapt_span_loss=-1"}),
                       doctest::Contains("train.adapt_span_loss: must be >= 0"), ConfigError);
}

// The objective's span term: its gradient on every z is adapt_span_loss * mem_len / heads, added
// once per step whatever the micro-batches; after the update every z is back in [0, 1].
TEST_CASE("span: the training term's gradient, once a step, and the clamp after each update") {
  ModelConfig c = tiny_model_config();
  c.adapt_span = true, c.adapt_span_init = 0.5f;
  const int64_t B = 2, T = 6;
  std::vector<int32_t> x, y;
  for (int i = 0; i < B * T; ++i) x.push_back((i * 3 + 1) % 7), y.push_back((i * 5 + 2) % 7);
  auto span_grads = [&](double weight, int64_t accum) {
    auto m = make_model(c);
    LoopConfig lc;
    lc.lr = 1e-30, lc.adapt_span_loss = weight, lc.grad_accum = accum, lc.adam.weight_decay = 0;
    TrainLoop loop(*m, lc);
    const StepStats s = loop.step(x.data(), y.data(), B, T);
    Var g = m->params().get("layers.0.attn.span");
    return std::make_pair(s, std::vector<float>(g.grad().data, g.grad().data + 2));
  };
  const auto [plain, g0] = span_grads(0, 1);
  const auto [weighted, g1] = span_grads(0.25, 1);
  const auto [accumulated, g2] = span_grads(0.25, 2);
  CHECK(plain.span_loss == doctest::Approx(0.0));
  CHECK(weighted.span_loss == doctest::Approx(0.25 * 4 * (0.5 + 0.5)));  // two layers' mean z, times mem_len 4
  CHECK(weighted.loss == plain.loss);  // the logged loss is the cross-entropy alone
  for (int h = 0; h < 2; ++h) {
    CHECK(g1[size_t(h)] - g0[size_t(h)] == doctest::Approx(0.25 * 4 / 2));
    CHECK(g2[size_t(h)] - g0[size_t(h)] == doctest::Approx(0.25 * 4 / 2).epsilon(1e-4));
  }
  // A large step drives the spans out of [0, 1]: clamped back.
  auto m = make_model(c);
  LoopConfig lc;
  lc.lr = 10, lc.adapt_span_loss = 1;
  TrainLoop loop(*m, lc);
  loop.step(x.data(), y.data(), B, T);
  for (const std::vector<float>& layer : m->spans())
    for (float s : layer) CHECK((s >= 0.f && s <= 4.f));
  CHECK(m->spans()[0][0] == 0.f);  // pulled in by the term, stopped at 0
}

// Fine-tuning a model with adaptive span from weights without it: the spans start at
// adapt_span_init, every other weight is the file's. Dropping learned spans is an error.
TEST_CASE("span: init_from weights without spans starts them at adapt_span_init; spans into a model without them are refused") {
  TempDir d, e, f;
  REQUIRE(Trainer(load_run_config(write_config(d), {})).run(false));
  const std::unique_ptr<Model> plain = load_model(d / "out");
  const std::vector<std::string> fine_tune = {"model.adapt_span=true", "model.adapt_span_init=0.5",
                                              "train.init_from=" + d / "out", "train.out_dir=" + e / "out",
                                              "train.lr=1e-30", "train.min_lr=0", "train.weight_decay=0", "train.steps=1"};
  REQUIRE(Trainer(load_run_config(write_config(d), fine_tune)).run(false));
  const std::unique_ptr<Model> spanned = load_model(e / "out");
  CHECK(spanned->spans() == std::vector<std::vector<float>>{{4.f, 4.f}, {4.f, 4.f}});  // 0.5 x mem_len 8
  for (const std::string& name : plain->params().names()) {
    INFO(name);
    const Var a = plain->params().get(name), b = spanned->params().get(name);
    CHECK(std::equal(a.data(), a.data() + a.value().numel(), b.data()));
  }
  const RunConfig dropping = load_run_config(write_config(d), {"train.init_from=" + e / "out", "train.out_dir=" + f / "out"});
  CHECK_THROWS_WITH(Trainer(dropping).run(false), doctest::Contains("unexpected tensor 'layers.0.attn.span'"));
}

// A run logs the spans (every head's, in steps) and the term, its checkpoints carry the spans,
// and init_from starts a new run from them.
TEST_CASE("span: the trainer logs spans, checkpoints and init_from carry them") {
  TempDir d;
  const std::vector<std::string> span = {"model.adapt_span=true", "model.adapt_span_init=0.5", "train.adapt_span_loss=0.01"};
  REQUIRE(Trainer(load_run_config(write_config(d), span)).run(false));
  std::ifstream metrics(d / "out/metrics.jsonl");
  std::string line;
  int train_lines = 0;
  while (std::getline(metrics, line)) {
    const nlohmann::json j = nlohmann::json::parse(line);
    if (j["split"] != "train") continue;
    ++train_lines;
    REQUIRE(j.contains("spans"));
    CHECK(j["spans"].size() == 2);     // layers
    CHECK(j["spans"][0].size() == 2);  // heads
    CHECK(j["span_loss"].get<double>() > 0);
  }
  CHECK(train_lines == 4);
  const std::unique_ptr<Model> trained = load_model(d / "out");
  CHECK(trained->config().adapt_span);
  const std::vector<std::vector<float>> spans = trained->spans();
  CHECK(spans != std::vector<std::vector<float>>{{4.f, 4.f}, {4.f, 4.f}});  // they moved from 0.5 x mem_len 8
  TempDir e;
  std::vector<std::string> fine_tune = span;
  fine_tune.push_back("train.init_from=" + d / "out");
  fine_tune.push_back("train.out_dir=" + e / "out");
  fine_tune.push_back("train.lr=1e-30");
  fine_tune.push_back("train.min_lr=0");
  fine_tune.push_back("train.weight_decay=0");
  fine_tune.push_back("train.adapt_span_loss=0");
  fine_tune.push_back("train.steps=1");
  REQUIRE(Trainer(load_run_config(write_config(d), fine_tune)).run(false));
  CHECK(load_model(e / "out")->spans() == spans);

  // fbt plot draws a line per head; fbt spans prints them, and refuses a model without spans.
  std::vector<std::string> charts;
  std::filesystem::create_directories(d / "plot");
  const std::string script = gnuplot_script({d / "out/metrics.jsonl"}, d / "plot", charts);
  CHECK(std::find(charts.begin(), charts.end(), "spans.png") != charts.end());
  CHECK(script.find("layer 1 head 1") != std::string::npos);
  auto fbt_cli = [](const std::string& args) {
    std::string out;
    FILE* p = ::popen((std::string(FBT_BIN) + " " + args + " 2>&1").c_str(), "r");
    REQUIRE(p != nullptr);
    std::array<char, 4096> buf{};
    for (size_t n; (n = std::fread(buf.data(), 1, buf.size(), p)) > 0;) out.append(buf.data(), n);
    return std::make_pair(::pclose(p), out);
  };
  const auto [status, table] = fbt_cli("spans " + d / "out");
  CHECK(status == 0);
  CHECK(table.find(fmt::format("{:.1f}", spans[1][0])) != std::string::npos);
  CHECK(table.find("attention reads the last") != std::string::npos);
  const auto [json_status, json_text] = fbt_cli("spans --json " + d / "out");
  CHECK(json_status == 0);
  CHECK(nlohmann::json::parse(json_text)["spans"][1].size() == 2);
  TempDir f;
  REQUIRE(Trainer(load_run_config(write_config(f))).run(false));
  const auto [refused, why] = fbt_cli("spans " + f / "out");
  CHECK(refused != 0);
  CHECK(why.find("the model has no adaptive span (model.adapt_span is false)") != std::string::npos);
}
