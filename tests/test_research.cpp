// Research measurements against brute-force computations with the naive reference model:
// gradient norm by lag, truncation bias, exact and probed Jacobian norms.
#include <doctest/doctest.h>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "gradcheck.hpp"
#include "reference_model.hpp"
#include "run_fixture.hpp"
#include "cli/plot.hpp"
#include "tests/gnuplot_inert.hpp"
#include "research/research.hpp"

using namespace fbt;
using namespace fbt::testing;

namespace {

ModelConfig cfg(int64_t seq_len, bool shared_kv, bool keep_last) {
  ModelConfig c = tiny_model_config();
  c.seq_len = seq_len, c.mem_len = 5;
  c.shared_kv = shared_kv, c.keep_last_hidden = keep_last;
  return c;
}

CallBatch batch(int64_t m, uint64_t seed) {
  CallBatch b;
  b.B = 2, b.T = 8, b.memory_rows = m;
  Rng r(seed);
  for (int64_t i = 0; i < b.B * b.T; ++i) {
    b.tokens.push_back(int32_t(r.uniform() * 7));
    b.targets.push_back(int32_t(r.uniform() * 7));
  }
  b.memory.resize(size_t(b.B * m * 6));
  fill_normal(b.memory.data(), int64_t(b.memory.size()), seed + 1);
  return b;
}

RefOutput reference(FeedbackTransformer& model, const CallBatch& b, const DetachPolicy& p, bool last) {
  tape().reset();
  model.params().zero_grad();
  Tensor mt{const_cast<float*>(b.memory.data()), Shape{b.B, b.memory_rows, 6}, Device::CPU};
  return reference_forward(model, b.tokens, b.targets, b.B, b.T, b.memory_rows ? &mt : nullptr, Var(), p, last);
}

double row_norm(Var v, int64_t row) {
  Tensor g = tape().grad(v);
  double s = 0;
  for (int64_t j = 0; j < 6; ++j) s += double(g.data[row * 6 + j]) * g.data[row * 6 + j];
  return std::sqrt(s);
}

struct Variant {
  int64_t seq_len;
  bool shared, keep_last;
  int64_t m;
  std::vector<std::string> policies;
};
const std::vector<Variant> kVariants = {
    {1, true, false, 0, {"none", "horizon:2", "every:3", "all"}},
    {1, false, true, 3, {"none", "horizon:4", "all"}},
    {2, true, false, 2, {"none", "horizon:2", "every:4"}},
    {2, false, false, 0, {"none", "all"}},
};

}  // namespace

TEST_CASE("research: gradient norm by lag equals the reference's per-vector gradients") {
  for (const Variant& v : kVariants) {
    FeedbackTransformer model(cfg(v.seq_len, v.shared, v.keep_last));
    fill_normal(model.params().values().data(), int64_t(model.params().numel()), 3, 0.4f);
    CallBatch b = batch(v.m, 7);
    for (const std::string& p : v.policies) {
      INFO("seq_len " << v.seq_len << " policy " << p);
      const DetachPolicy pol = DetachPolicy::parse(p, v.seq_len);
      auto fast = grad_norm_by_lag(model, b, pol);
      RefOutput r = reference(model, b, pol, true);
      tape().backward(r.loss);
      REQUIRE(fast.size() == size_t(b.T - 1));
      double total = 0;
      for (int64_t u = 0; u + 1 < b.T; ++u)
        for (int64_t row = 0; row < b.B; ++row) {
          const double expect = row_norm(r.written[size_t(u)], row);
          total += expect;
          CHECK(fast[size_t(b.T - 2 - u)][size_t(row)] == doctest::Approx(expect).epsilon(1e-4).scale(1e-6));
        }
      if (p == "none") CHECK(total > 1e-3);  // the measurement is not vacuous
      if (p == "all") CHECK(fast[1][0] == 0.0);
    }
  }
}

TEST_CASE("research: truncation bias against brute-force gradients") {
  for (const Variant& v : kVariants) {
    FeedbackTransformer model(cfg(v.seq_len, v.shared, v.keep_last));
    fill_normal(model.params().values().data(), int64_t(model.params().numel()), 5, 0.4f);
    CallBatch b = batch(v.m, 9);
    auto ref_grad = [&](const DetachPolicy& p) {
      RefOutput r = reference(model, b, p, false);
      tape().backward(r.loss);
      return std::vector<double>(model.params().grads().begin(), model.params().grads().end());
    };
    const std::vector<double> none = ref_grad(DetachPolicy{});
    for (const std::string& p : v.policies) {
      INFO("policy " << p);
      const DetachPolicy pol = DetachPolicy::parse(p, v.seq_len);
      const std::vector<double> g = ref_grad(pol);
      double d = 0, dot = 0, gg = 0, nn = 0;
      for (size_t i = 0; i < g.size(); ++i) {
        d += (g[i] - none[i]) * (g[i] - none[i]), dot += g[i] * none[i], gg += g[i] * g[i], nn += none[i] * none[i];
      }
      auto rows = truncation_bias(model, parameter_gradient(model, b, pol), parameter_gradient(model, b, DetachPolicy{}));
      REQUIRE(rows[0].group == "all");
      CHECK(rows[0].rel_error == doctest::Approx(std::sqrt(d / nn)).epsilon(1e-3).scale(1e-5));
      CHECK(rows[0].cosine == doctest::Approx(dot / std::sqrt(gg * nn)).epsilon(1e-4));
      if (p == "none") CHECK(rows[0].rel_error == 0.0);
      bool has_layer0 = false;
      for (const BiasRow& r : rows) has_layer0 = has_layer0 || r.group == "layers.0";
      CHECK(has_layer0);
    }
  }
  CHECK(param_group("layers.12.ff.w_in.weight") == "layers.12");
  CHECK(param_group("shared_kv.weight") == "memory");
  CHECK(param_group("to_logits.bias") == "output");
  CHECK(param_group("token_emb.weight") == "token_emb");
}

TEST_CASE("research: exact Jacobian norms against a full brute-force Jacobian") {
  for (const Variant& v : kVariants) {
    FeedbackTransformer model(cfg(v.seq_len, v.shared, v.keep_last));
    fill_normal(model.params().values().data(), int64_t(model.params().numel()), 11, 0.4f);
    CallBatch b = batch(v.m, 13);
    const DetachPolicy pol = DetachPolicy::parse(v.policies[1], v.seq_len);
    auto exact = jacobian_sq_norms(model, b, pol, 0, 1, true);
    // Brute force: one backward per output coordinate of m_{T-1}, through the reference.
    RefOutput r = reference(model, b, pol, false);
    const Var target = r.written.back();
    std::vector<std::vector<double>> brute(size_t(b.T - 1), std::vector<double>(size_t(b.B), 0.0));
    for (int64_t j = 0; j < 6; ++j) {
      std::vector<float> seed(size_t(b.B * 6), 0.f);
      for (int64_t row = 0; row < b.B; ++row) seed[size_t(row * 6 + j)] = 1.f;
      tape().zero_grad();
      tape().backward(target, Tensor{seed.data(), target.shape(), Device::CPU});
      for (int64_t u = 0; u + 1 < b.T; ++u)
        for (int64_t row = 0; row < b.B; ++row) {
          const double n = row_norm(r.written[size_t(u)], row);
          brute[size_t(b.T - 2 - u)][size_t(row)] += n * n;
        }
    }
    INFO("seq_len " << v.seq_len << " policy " << v.policies[1]);
    double total = 0;
    for (size_t k = 0; k < brute.size(); ++k)
      for (size_t row = 0; row < 2; ++row) {
        total += brute[k][row];
        CHECK(exact[k][row] == doctest::Approx(brute[k][row]).epsilon(1e-4).scale(1e-8));
      }
    if (pol.kind != DetachPolicy::Kind::All) CHECK(total > 1e-4);
  }
}

TEST_CASE("research: random probes estimate the Jacobian norm") {
  FeedbackTransformer model(cfg(1, true, false));
  fill_normal(model.params().values().data(), int64_t(model.params().numel()), 17, 0.4f);
  CallBatch b = batch(0, 19);
  auto exact = jacobian_sq_norms(model, b, DetachPolicy{}, 0, 1, true);
  auto probed = jacobian_sq_norms(model, b, DetachPolicy{}, 800, 23, false);
  for (size_t k = 0; k < 3; ++k)  // the nearest lags, where the norm is far from zero
    for (size_t row = 0; row < 2; ++row) CHECK(probed[k][row] == doctest::Approx(exact[k][row]).epsilon(0.2));
}

TEST_CASE("research: layer mix is the softmax of layer_weight") {
  FeedbackTransformer model(cfg(1, true, false));
  Var w = model.params().get("layer_weight");
  w.data()[0] = 0.f, w.data()[1] = std::log(2.f), w.data()[2] = std::log(3.f);
  auto a = layer_mix(model);
  CHECK(a[0] == doctest::Approx(1.0 / 6));
  CHECK(a[2] == doctest::Approx(0.5));
}

// ---- fbt plot on hostile run folders ----

namespace {
namespace fs = std::filesystem;


// Payloads for each place a string reaches the script: quotes, newlines and carriage returns,
// backquotes, gnuplot's ! and system(), shell $(...), macros, a NUL, a backslash before a quote.
// Each would create `marker` if it ran.
std::vector<std::string> hostile_payloads(const fs::path& marker) {
  const std::string m = marker.string();
  return {"x' 0)\n!touch " + m + "\nset xtics ('y", "`touch " + m + "`", "$(touch " + m + ")",
          "'; system('touch " + m + "'); '", "x'.system(\"touch " + m + "\").'", "a\r!touch " + m,
          "\\'\n! touch " + m + " #", "@x ' . `touch " + m + "` . '", std::string("n\0!touch ", 9) + m};
}

// The payload in every string a plotted file holds: (1) policies of grads lines and of bias bars,
// (2) sources (two grads files), (3) groups, (4) run folder names (two runs share a chart), with
// accuracy and probe lines. Returns the two inputs: the grads folder and the two run folders.
std::pair<std::string, std::vector<std::string>> write_hostile_case(const fs::path& dir, const std::string& p) {
  auto line = [](std::ofstream& out, const nlohmann::json& j) { out << j.dump() << "\n"; };
  fs::create_directories(dir / "grads");
  for (const char* file : {"a.jsonl", "b.jsonl"}) {
    std::ofstream out(dir / "grads" / file);
    for (int lag = 1; lag <= 3; ++lag)
      line(out, {{"kind", "lag"}, {"policy", p}, {"source", p}, {"lag", lag}, {"grad_norm", 1.0 / lag}});
    line(out, {{"kind", "bias"}, {"policy", p}, {"group", p}, {"rel_error", 0.2}});
    line(out, {{"kind", "bias"}, {"policy", "none"}, {"group", "all"}, {"rel_error", 0.0}});
  }
  std::string name = p;
  std::replace(name.begin(), name.end(), '/', '_');
  name.erase(std::remove(name.begin(), name.end(), '\0'), name.end());
  std::vector<std::string> runs;
  for (const std::string& run : {name + " A", name + " B"}) {
    fs::create_directories(dir / "runs" / run);
    std::ofstream out(dir / "runs" / run / "metrics.jsonl");
    for (int step = 1; step <= 3; ++step)
      line(out, {{"split", "train"}, {"step", step}, {"loss", 2.0 / step}, {"bpc", 3.0 / step}});
    runs.push_back((dir / "runs" / run).string());
  }
  return {(dir / "grads").string(), runs};
}
}  // namespace

TEST_CASE("plot: strings from the files and paths it plots never run a command, and the charts are drawn") {
  if (std::system("command -v gnuplot >/dev/null 2>&1") != 0) {
    MESSAGE("gnuplot not installed (./run installs gnuplot-nox): skipped");
    return;
  }
  const TempDir root;
  const fs::path marker = root.path / "RAN";
  int case_no = 0;
  for (const std::string& p : hostile_payloads(marker)) {
    INFO("payload " << nlohmann::json(p).dump());
    const fs::path dir = root.path / ("case" + std::to_string(case_no++));
    const auto [grads, runs] = write_hostile_case(dir, p);
    std::vector<std::string> made = plot_jsonl({grads}, "");
    CHECK(made.size() >= 2);  // gradient by lag and the truncation bias
    // (5) the output folder
    made = plot_jsonl(runs, (dir / ("out " + fs::path(runs[0]).filename().string())).string());
    CHECK(made.size() == 2);  // loss and bpc
    for (const std::string& png : made) CHECK(fs::file_size(png) > 0);
    CHECK_FALSE(fs::exists(marker));
  }
  CHECK_FALSE(fs::exists("RAN"));  // a relative path would have landed here
}

TEST_CASE("plot: a line with a field missing or of the wrong type is one error naming the file and line") {
  // fuzz_plot's findings: nlohmann's operator[] on a missing key (an assertion, undefined in a
  // release build) and a type error thrown past the file and line.
  const TempDir root;
  const std::vector<std::string> lines = {
      R"({"split": "train", "loss": 1.0, "bpc": 1.0})",                      // no step
      R"({"split": "valid", "step": "ten", "loss": 1.0, "bpc": 1.0})",       // a string step
      R"({"kind": "lag", "policy": "p", "source": 0.5, "lag": 1, "grad_norm": 1.0})",  // a number source
      R"({"kind": "bias", "policy": 3, "group": "all", "rel_error": 0.1})",  // a number policy
      R"({"split": "probe", "step": 1, "lag_grad_norm": {"a": 1}, "layer_mix": []})",
      R"([1, "kind"])", "3",
      R"({"split": "train", "step": 2, "loss": 1.0, "bpc": 1.0, "spans": 3})",          // spans not [layer][head]
      R"({"split": "train", "step": 2, "loss": 1.0, "bpc": 1.0, "spans": [["a"]]})"};
  int k = 0;
  for (const std::string& bad : lines) {
    INFO(bad);
    const fs::path f = root.path / ("m" + std::to_string(k++) + ".jsonl");
    std::ofstream(f) << R"({"split": "train", "step": 1, "loss": 1.0, "bpc": 1.0})" << "\n" << bad << "\n";
    std::vector<std::string> charts;
    try {
      gnuplot_script({f.string()}, root.path.string(), charts);
      FAIL("no error");
    } catch (const std::runtime_error& e) {
      CHECK(std::string(e.what()).rfind(f.string() + ":2: ", 0) == 0);
    }
  }
}

TEST_CASE("plot: the gnuplot script for hostile files holds their strings only as inert literals") {
  const TempDir root;
  int case_no = 0;
  for (const std::string& p : hostile_payloads(root.path / "RAN")) {
    INFO("payload " << nlohmann::json(p).dump());
    const fs::path dir = root.path / ("case" + std::to_string(case_no++));
    const auto [grads, runs] = write_hostile_case(dir, p);
    std::vector<std::string> files = {grads + "/a.jsonl", grads + "/b.jsonl"};
    for (const std::string& r : runs) files.push_back(r + "/metrics.jsonl");
    fs::create_directories(dir / "data");
    std::vector<std::string> charts;
    const std::string script = gnuplot_script(files, (dir / "data").string(), charts);
    CHECK(charts.size() == 4);  // loss, bpc, gradient by lag, truncation bias
    std::string why;
    CHECK_MESSAGE(fbt::testing::gnuplot_script_is_inert(script, why), why);
  }
  // The check itself: each way out of a literal is caught.
  std::string why;
  CHECK(fbt::testing::gnuplot_script_is_inert("set title 'a'.\"'\".'b'\nset output '../loss.png'\n", why));
  for (const char* bad : {"set title 'a\n!touch x\n'", "set title 'a' . system('id')", "set title \"`id`\"",
                          "set output '/tmp/x.png'", "plot '< id' index 0 with boxes title 'x'", "!id",
                          "set title 'a'; !id", "load 'x'"})
    CHECK_MESSAGE(!fbt::testing::gnuplot_script_is_inert(bad, why), bad);
}
