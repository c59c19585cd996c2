// `fbt grads` (gradient flow through the memory, research/research.hpp) and `fbt plot` (PNG charts
// of metrics.jsonl and grads JSONL files with gnuplot).
#include <fmt/core.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <nlohmann/json.hpp>

#include "util/safetensors.hpp"
#include "data/tokens.hpp"
#include "models/config.hpp"
#include "models/weights.hpp"
#include "util/check.hpp"
#include "cli/commands.hpp"
#include "train/config.hpp"
#include "research/research.hpp"
#include "train/trainer.hpp"

namespace fs = std::filesystem;
using nlohmann::json;

namespace fbt::cli {

namespace {

// Consecutive calls over a split's streams, each starting from the state the previous returned.
std::vector<CallBatch> batches_from_split(const GradsArgs& a, const RunConfig& rc, FeedbackTransformer& model) {
  const std::string& path = rc.data.split(a.split);
  Corpus corpus(path, rc.data.format, rc.model.num_tokens);
  StreamBatcher batcher(corpus, rc.train.batch_size, rc.train.bptt);
  std::vector<CallBatch> out;
  State state;
  const int64_t B = rc.train.batch_size;
  for (int64_t i = 0; i < a.batches; ++i) {
    CallBatch b;
    b.B = B;
    b.tokens.resize(size_t(B * rc.train.bptt));
    b.targets.resize(size_t(B * rc.train.bptt));
    b.T = batcher.next(b.tokens.data(), b.targets.data(), false);
    if (b.T == 0) break;
    b.memory = state.memory.values();
    b.memory_rows = state.memory.rows();
    NoGradScope ng;
    const StepScope scope(model.device());
    model.forward(b.tokens.data(), B, b.T, &state);
    out.push_back(std::move(b));
  }
  check(!out.empty(), path, ": too short for one batch of ", B, " x ", rc.train.bptt);
  return out;
}

// Appends one batch's per-lag rows (result[k][row]) to the rows gathered so far.
void gather(std::vector<std::vector<double>>& all, const std::vector<std::vector<double>>& batch) {
  if (all.size() < batch.size()) all.resize(batch.size());
  for (size_t k = 0; k < batch.size(); ++k) all[k].insert(all[k].end(), batch[k].begin(), batch[k].end());
}

double mean(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return v.empty() ? 0.0 : s / double(v.size());
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

}  // namespace

int run_grads(const GradsArgs& a) {
  check(!a.out.empty(), "--out is required");
  const bool from_files = !a.weights.empty();
  check(from_files != !a.checkpoint.empty(), "give either --weights and --batch, or --checkpoint (with --config)");
  std::unique_ptr<FeedbackTransformer> model;
  std::vector<CallBatch> batches;
  ModelConfig cfg;
  if (from_files) {
    check(!a.batch.empty(), "--weights needs --batch");
    cfg = load_model_config(a.config);
    model = std::make_unique<FeedbackTransformer>(cfg, /*initialize=*/false);
    load_weights(*model, SafeTensors::load(a.weights), a.weights);
    model->to(parse_device(a.device.empty() ? "cpu" : a.device));
    batches = {load_call_batch(a.batch, cfg)};
  } else {
    RunConfig rc = load_run_config(a.config);
    if (rc.train.threads > 0) omp_set_num_threads(int(rc.train.threads));
    const std::string path = resolve_weights(a.checkpoint);
    cfg = rc.model;
    model = std::make_unique<FeedbackTransformer>(cfg, /*initialize=*/false);
    load_weights(*model, SafeTensors::load(path), path);
    model->to(parse_device(a.device.empty() ? rc.train.device : a.device));
    batches = batches_from_split(a, rc, *model);
  }
  const DetachPolicy policy = [&] {
    try {
      return DetachPolicy::parse(a.detach, cfg.seq_len);
    } catch (const std::invalid_argument& e) {
      throw std::invalid_argument(std::string("--detach: ") + e.what());
    }
  }();
  auto wants = [&](const std::string& m) { return std::find(a.measures.begin(), a.measures.end(), m) != a.measures.end(); };
  for (const std::string& m : a.measures)
    check(m == "lag" || m == "bias" || m == "jacobian", "--measure ", m, ": expected lag, bias or jacobian");

  std::ofstream out(a.out);
  check(bool(out), a.out, ": cannot write");
  auto emit = [&](const json& j) { out << j.dump() << "\n"; };
  const std::string source = from_files ? a.batch : a.checkpoint + " (" + a.split + ")";

  if (wants("lag")) {  // per lag: all batch rows of all batches
    std::vector<std::vector<double>> rows;
    for (const CallBatch& b : batches) gather(rows, grad_norm_by_lag(*model, b, policy));
    for (size_t k = 0; k < rows.size(); ++k) {
      json j = {{"kind", "lag"},   {"policy", policy.str()},          {"lag", k + 1}, {"grad_norm", mean(rows[k])},
                {"median", median(rows[k])}, {"max", *std::max_element(rows[k].begin(), rows[k].end())},
                {"source", source}};
      if (a.per_row) j["rows"] = rows[k];
      emit(j);
    }
  }
  if (wants("bias")) {
    auto total_gradient = [&](const DetachPolicy& p) {
      std::vector<double> g(model->params().numel(), 0.0);
      for (const CallBatch& b : batches) {
        auto gb = parameter_gradient(*model, b, p);
        for (size_t i = 0; i < g.size(); ++i) g[i] += gb[i] / double(batches.size());
      }
      return g;
    };
    const std::vector<double> g_none = total_gradient(DetachPolicy{});
    for (const std::string& text : a.policies) {
      DetachPolicy p;
      try {
        p = DetachPolicy::parse(text, cfg.seq_len);
      } catch (const std::invalid_argument& e) {
        fmt::print(stderr, "skipping policy {}: {}\n", text, e.what());
        continue;
      }
      for (const BiasRow& r : truncation_bias(*model, total_gradient(p), g_none))
        emit({{"kind", "bias"}, {"policy", p.str()}, {"group", r.group}, {"rel_error", r.rel_error}, {"cosine", r.cosine},
              {"source", source}});
    }
  }
  if (wants("jacobian")) {
    std::vector<std::vector<double>> sq;
    for (size_t i = 0; i < batches.size(); ++i)
      gather(sq, jacobian_sq_norms(*model, batches[i], policy, a.probes, a.seed + i, a.exact_jacobian));
    for (size_t k = 0; k < sq.size(); ++k) {
      json j = {{"kind", "jacobian"}, {"policy", policy.str()}, {"k", k + 1}, {"frobenius", std::sqrt(mean(sq[k]))},
                {"probes", a.exact_jacobian ? cfg.dim : a.probes}, {"exact", a.exact_jacobian}, {"source", source}};
      if (a.per_row) {
        std::vector<double> r;
        for (double v : sq[k]) r.push_back(std::sqrt(v));
        j["rows"] = r;
      }
      emit(j);
    }
  }
  fmt::print("wrote {} ({} batch{} of {} x {}, detach {})\n", a.out, batches.size(), batches.size() == 1 ? "" : "es",
             batches[0].B, batches[0].T, policy.str());
  return 0;
}

// ---- plots ----

namespace {

struct Series {
  std::string title;
  std::vector<std::pair<double, double>> points;
};

std::string write_data(const fs::path& dir, const std::string& name, const std::vector<Series>& series) {
  const fs::path p = dir / (name + ".dat");
  std::ofstream out(p);
  for (const Series& s : series) {  // gnuplot index blocks, two blank lines apart
    out << "# " << s.title << "\n";
    for (auto [x, y] : s.points) out << x << " " << y << "\n";
    out << "\n\n";
  }
  return p.string();
}

std::string plot_lines(const std::string& dat, const std::vector<Series>& series, const std::string& style) {
  std::string cmd = "plot ";
  for (size_t i = 0; i < series.size(); ++i)
    cmd += fmt::format("{}'{}' index {} with {} title '{}'", i ? ", " : "", dat, i, style, series[i].title);
  return cmd + "\n";
}

}  // namespace

int run_plot(const PlotArgs& a) {
  std::vector<fs::path> files;
  fs::path dir;
  if (fs::is_directory(a.input)) {
    dir = a.input;
    for (const auto& e : fs::directory_iterator(a.input))
      if (e.path().extension() == ".jsonl") files.push_back(e.path());
    std::sort(files.begin(), files.end());
  } else {
    check(fs::exists(a.input), a.input, ": no such file or directory");
    files.push_back(a.input);
    dir = fs::path(a.input).parent_path();
  }
  check(!files.empty(), a.input, ": no .jsonl files to plot");
  const fs::path out_dir = a.out_dir.empty() ? (dir.empty() ? fs::path(".") : dir) : fs::path(a.out_dir);
  fs::create_directories(out_dir);

  std::map<std::string, Series> curves;                   // loss/bpc by split
  std::map<std::string, Series> lag_by, jac_by;           // by policy (grads files) or by step (probes)
  std::map<int, Series> mix;                              // layer-mix weight i over steps
  std::map<std::string, std::map<std::string, double>> bias;  // policy -> group -> rel_error
  // A grads line belongs to the series of its policy, and of its source (checkpoint, batch file,
  // JSONL file) when the input holds several: one line per policy or per checkpoint.
  std::set<std::string> sources;
  for (const fs::path& f : files) {
    std::ifstream in(f);
    std::string line;
    while (std::getline(in, line))
      if (line.find("\"kind\"") != std::string::npos) sources.insert(f.string() + json::parse(line).value("source", ""));
  }
  std::string current_file;
  auto series_key = [&](const json& j) {
    const std::string policy = j.value("policy", "");
    return sources.size() > 1 ? fs::path(current_file).stem().string() + " " + j.value("source", "") + " " + policy : policy;
  };
  for (const fs::path& f : files) {
    current_file = f.string();
    std::ifstream in(f);
    std::string line;
    int64_t lineno = 0;
    while (std::getline(in, line)) {
      ++lineno;
      if (line.empty()) continue;
      json j;
      try {
        j = json::parse(line);
      } catch (const json::exception&) {
        throw std::runtime_error(fmt::format("{}:{}: not a JSON line", f.string(), lineno));
      }
      const std::string kind = j.value("kind", "");
      const std::string split = j.value("split", "");
      if (split == "train" || split == "valid") {
        curves[split + " loss"].points.push_back({j["step"].get<double>(), j["loss"].get<double>()});
        curves[split + " bpc"].points.push_back({j["step"].get<double>(), j["bpc"].get<double>()});
      } else if (split == "probe") {
        const std::string key = fmt::format("step {}", j["step"].get<int64_t>());
        auto& s = lag_by[key];
        s.title = key;
        const auto& g = j["lag_grad_norm"];
        for (size_t k = 0; k < g.size(); ++k) s.points.push_back({double(k + 1), g[k].get<double>()});
        const auto& w = j["layer_mix"];
        for (size_t i = 0; i < w.size(); ++i) {
          mix[int(i)].title = i == 0 ? "embedding" : fmt::format("layer {}", i);
          mix[int(i)].points.push_back({j["step"].get<double>(), w[i].get<double>()});
        }
      } else if (kind == "lag") {
        auto& s = lag_by[series_key(j)];
        s.title = series_key(j);
        s.points.push_back({j["lag"].get<double>(), j["grad_norm"].get<double>()});
      } else if (kind == "jacobian") {
        auto& s = jac_by[series_key(j)];
        s.title = series_key(j);
        s.points.push_back({j["k"].get<double>(), j["frobenius"].get<double>()});
      } else if (kind == "bias") {
        bias[j["policy"].get<std::string>()][j["group"].get<std::string>()] = j["rel_error"].get<double>();
      }
    }
  }

  const fs::path tmp = out_dir / ".fbt-plot";
  fs::create_directories(tmp);
  std::string script = "set terminal pngcairo size 900,560 noenhanced\nset grid\nset key outside right\n";
  std::vector<std::string> made;
  auto chart = [&](const std::string& name, const std::string& title, const std::string& xl, const std::string& yl,
                   const std::vector<Series>& series, const std::string& extra, const std::string& style) {
    std::vector<Series> nonempty;
    for (const Series& s : series)
      if (!s.points.empty()) nonempty.push_back(s);
    if (nonempty.empty()) return;
    const std::string dat = write_data(tmp, name, nonempty);
    script += fmt::format("set output '{}'\nset title '{}'\nset xlabel '{}'\nset ylabel '{}'\n{}",
                          (out_dir / (name + ".png")).string(), title, xl, yl, extra);
    script += plot_lines(dat, nonempty, style);
    script += "unset logscale\n";
    made.push_back((out_dir / (name + ".png")).string());
  };
  auto titled = [](std::map<std::string, Series>& m, const std::vector<std::string>& keys) {
    std::vector<Series> v;
    for (const std::string& k : keys) {
      m[k].title = k;
      v.push_back(m[k]);
    }
    return v;
  };
  chart("loss", "cross-entropy (nats per token)", "step", "loss", titled(curves, {"train loss", "valid loss"}), "",
        "linespoints pt 7 ps 0.4");
  chart("bpc", "bits per character", "step", "bpc", titled(curves, {"train bpc", "valid bpc"}), "", "linespoints pt 7 ps 0.4");
  std::vector<Series> lags;
  for (auto& [k, s] : lag_by) lags.push_back(s);
  chart("grad_by_lag", "gradient norm of the last-position loss by memory lag", "lag (steps back)", "mean ||dL/dm||",
        lags, "set logscale y\n", "linespoints pt 7 ps 0.4");
  std::vector<Series> jacs;
  for (auto& [k, s] : jac_by) jacs.push_back(s);
  chart("jacobian", "||d m_t / d m_(t-k)||_F", "k", "Frobenius norm", jacs, "set logscale y\n", "linespoints pt 7 ps 0.4");
  std::vector<Series> mixes;
  for (auto& [i, s] : mix) mixes.push_back(s);
  chart("layer_mix", "memory mix weights softmax(layer_weight)", "step", "weight", mixes, "", "lines lw 2");
  if (!bias.empty()) {  // one bar group per policy: rel_error of "all"
    Series s{"all parameters", {}};
    std::string xtics = "set xtics (";
    int i = 0;
    for (auto& [policy, groups] : bias) {
      s.points.push_back({double(i), groups.count("all") ? groups["all"] : 0.0});
      xtics += fmt::format("{}'{}' {}", i ? ", " : "", policy, i);
      ++i;
    }
    chart("truncation_bias", "truncation bias: ||g - g_none|| / ||g_none||", "policy", "relative error", {s},
          xtics + ")\nset style fill solid 0.6\nset boxwidth 0.6\nset yrange [0:*]\n", "boxes");
    script += "set xtics autofreq\nset yrange [*:*]\n";
  }
  check(!made.empty(), a.input, ": nothing to plot (no train/valid/probe/lag/jacobian/bias lines)");
  const fs::path gp = tmp / "plots.gp";
  std::ofstream(gp) << script;
  const std::string cmd = "gnuplot '" + gp.string() + "' 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  check(p != nullptr, "cannot run gnuplot");
  std::string msg;
  char buf[512];
  while (std::fgets(buf, sizeof buf, p)) msg += buf;
  const int rc = ::pclose(p);
  if (rc != 0)
    throw std::runtime_error("gnuplot failed (install Debian's gnuplot-nox; ./run does): " + msg.substr(0, 400));
  fs::remove_all(tmp);
  for (const std::string& m : made) fmt::print("wrote {}\n", m);
  return 0;
}

}  // namespace fbt::cli
