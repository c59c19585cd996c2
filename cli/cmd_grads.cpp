// `fbt grads`: gradient flow through the memory (research/research.hpp) as JSONL rows: gradient
// norm by lag, truncation bias of detachment policies, Jacobian norms across time.
#include <fmt/core.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>

#include "cli/commands.hpp"
#include "cli/common.hpp"
#include "data/tokens.hpp"
#include "models/call_batch.hpp"
#include "research/research.hpp"
#include "train/checkpoint.hpp"
#include "train/config.hpp"
#include "util/check.hpp"
#include "util/files.hpp"

using nlohmann::json;

namespace fs = std::filesystem;

namespace fbt::cli {

namespace {

struct GradsArgs {
  // Either one call from files (like `fbt forward`) ...
  std::string config, weights, batch;
  // ... or batches of a split read from a checkpoint's run.
  std::string checkpoint, split = "valid";
  std::vector<std::string> overrides;  // --set on the run config
  int64_t batches = 4;
  std::string detach = "none";
  std::vector<std::string> policies{"none", "horizon:8", "horizon:32", "every:64", "all"};
  std::vector<std::string> measures{"lag", "bias", "jacobian"};
  int64_t probes = 16;
  bool exact_jacobian = false, per_row = false;
  uint64_t seed = 1;
  std::string out;
  std::string device;  // empty: the run config's train.device, else cpu
};

// Consecutive calls over a split's streams, each starting from the state the previous returned.
std::vector<CallBatch> batches_from_split(const GradsArgs& a, const RunConfig& rc, Model& model) {
  const std::string& path = rc.data.split(a.split);
  Corpus corpus(path, rc.data, rc.model.num_tokens);
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

// The model and the batches to measure on: one call from files (like `fbt forward`), or
// consecutive batches of a split read from a checkpoint's run.
struct Subject {
  std::unique_ptr<Model> model;
  std::vector<CallBatch> batches;
  std::string source;  // what the rows say they were measured on
};

Subject load_subject(const GradsArgs& a) {
  const bool from_files = !a.weights.empty();
  check(from_files != !a.checkpoint.empty(), "give either --weights and --batch, or --checkpoint (with --config)");
  Subject s;
  if (from_files) {
    check(!a.batch.empty(), "--weights needs --batch");
    const ModelConfig cfg = load_model_config(a.config);
    s.model = model_with_weights(cfg, a.weights, a.device.empty() ? "cpu" : a.device);
    s.batches = {load_call_batch(a.batch, cfg)};
    s.source = a.batch;
  } else {
    const RunConfig rc = load_run_config(a.config, a.overrides);
    set_threads(rc.train.threads);
    s.model = model_with_weights(rc.model, resolve_weights(a.checkpoint), a.device.empty() ? rc.train.device : a.device);
    s.batches = batches_from_split(a, rc, *s.model);
    s.source = a.checkpoint + " (" + a.split + ")";
  }
  return s;
}

using Emit = std::function<void(const json&)>;

void measure_lag(const GradsArgs& a, Subject& s, const DetachPolicy& policy, const Emit& emit) {
  // per lag (and per layer for the baseline): all batch rows of all batches
  const bool per_layer = is_baseline(*s.model);
  std::vector<std::vector<std::vector<double>>> rows(per_layer ? size_t(s.model->config().depth) : 1);
  for (const CallBatch& b : s.batches) {
    if (!per_layer) gather(rows[0], grad_norm_by_lag(*s.model, b, policy));
    else {
      const auto layers = grad_norm_by_lag_per_layer(*s.model, b);
      for (size_t l = 0; l < layers.size(); ++l) gather(rows[l], layers[l]);
    }
  }
  for (size_t l = 0; l < rows.size(); ++l)
    for (size_t k = 0; k < rows[l].size(); ++k) {
      const std::vector<double>& r = rows[l][k];
      json j = {{"kind", "lag"},   {"policy", policy.str()}, {"lag", k + 1}, {"grad_norm", mean(r)},
                {"median", median(r)}, {"max", *std::max_element(r.begin(), r.end())}, {"source", s.source}};
      if (per_layer) j["layer"] = l;
      if (a.per_row) j["rows"] = r;
      emit(j);
    }
}

void measure_bias(const GradsArgs& a, Subject& s, const Emit& emit) {
  Model& model = *s.model;
  auto total_gradient = [&](const DetachPolicy& p) {  // the mean over the batches
    std::vector<double> g(model.params().numel(), 0.0);
    for (const CallBatch& b : s.batches) {
      auto gb = parameter_gradient(model, b, p);
      for (size_t i = 0; i < g.size(); ++i) g[i] += gb[i] / double(s.batches.size());
    }
    return g;
  };
  const std::vector<double> g_none = total_gradient(DetachPolicy{});
  for (const std::string& text : a.policies) {
    DetachPolicy p;
    try {
      p = DetachPolicy::parse(text, model.config().seq_len);
    } catch (const std::invalid_argument& e) {
      fmt::print(stderr, "skipping policy {}: {}\n", text, e.what());
      continue;
    }
    for (const BiasRow& r : truncation_bias(model, total_gradient(p), g_none))
      emit({{"kind", "bias"}, {"policy", p.str()}, {"group", r.group}, {"rel_error", r.rel_error}, {"cosine", r.cosine},
            {"source", s.source}});
  }
}

void measure_jacobian(const GradsArgs& a, Subject& s, const DetachPolicy& policy, const Emit& emit) {
  std::vector<std::vector<double>> sq;
  for (size_t i = 0; i < s.batches.size(); ++i)
    gather(sq, jacobian_sq_norms(*s.model, s.batches[i], policy, a.probes, a.seed + i, a.exact_jacobian));
  for (size_t k = 0; k < sq.size(); ++k) {
    json j = {{"kind", "jacobian"}, {"policy", policy.str()}, {"k", k + 1}, {"frobenius", std::sqrt(mean(sq[k]))},
              {"probes", a.exact_jacobian ? s.model->config().dim : a.probes}, {"exact", a.exact_jacobian},
              {"source", s.source}};
    if (a.per_row) {
      std::vector<double> r;
      for (double v : sq[k]) r.push_back(std::sqrt(v));
      j["rows"] = r;
    }
    emit(j);
  }
}

void run_grads(const GradsArgs& a) {
  check(!a.out.empty(), "--out is required");
  Subject s = load_subject(a);
  const DetachPolicy policy = detach_flag(a.detach, s.model->config().seq_len);
  auto wants = [&](const std::string& m) { return std::find(a.measures.begin(), a.measures.end(), m) != a.measures.end(); };
  for (const std::string& m : a.measures)
    check(m == "lag" || m == "bias" || m == "jacobian", "--measure ", m, ": expected lag, bias or jacobian");
  if (is_baseline(*s.model))
    check(!wants("bias") && !wants("jacobian"), "--measure bias and jacobian apply to the feedback model (the ",
          "transformer_xl model has no detachment policies and no memory vectors); use --measure lag");
  const fs::path dir = fs::path(a.out).parent_path().empty() ? fs::path(".") : fs::path(a.out).parent_path();
  check(::access(dir.c_str(), W_OK) == 0, a.out, ": cannot write in ", dir.string());  // before the work
  std::string lines;
  const Emit emit = [&](const json& j) { lines += j.dump() + "\n"; };
  if (wants("lag")) measure_lag(a, s, policy, emit);
  if (wants("bias")) measure_bias(a, s, emit);
  if (wants("jacobian")) measure_jacobian(a, s, policy, emit);
  write_text_atomic(a.out, lines);
  const CallBatch& b = s.batches[0];
  fmt::print("wrote {} ({} batch{} of {} x {}, detach {})\n", a.out, s.batches.size(), s.batches.size() == 1 ? "" : "es",
             b.B, b.T, policy.str());
}

}  // namespace

void add_grads(CLI::App& app) {
  auto a = std::make_shared<GradsArgs>();
  CLI::App* sub = app.add_subcommand("grads", "measure gradient flow through the memory; JSONL out");
  sub->add_option("--config", a->config, "model config (with --weights) or run config (with --checkpoint)")
      ->required()
      ->check(CLI::ExistingFile);
  sub->add_option("--weights", a->weights, "weights (safetensors), with --batch")->check(CLI::ExistingFile);
  sub->add_option("--batch", a->batch, "inputs/targets [B,T] (+ memory, context)")->check(CLI::ExistingFile);
  sub->add_option("--checkpoint", a->checkpoint, "checkpoint/run directory or weights file, with --split");
  sub->add_option("--split", a->split, "valid | test | train (with --checkpoint)");
  sub->add_option("--set", a->overrides, "override a key of the run config (with --checkpoint)");
  sub->add_option("--batches", a->batches, "consecutive batches of the split")->check(at_least(1));
  sub->add_option("--detach", a->detach, "policy for lag and jacobian measurements");
  sub->add_option("--policies", a->policies, "policies compared with none for the truncation bias")->delimiter(',');
  sub->add_option("--measure", a->measures, "lag, bias, jacobian (default: all)")->delimiter(',');
  sub->add_option("--probes", a->probes, "random probes for the Jacobian estimate")->check(at_least(1));
  sub->add_flag("--exact-jacobian", a->exact_jacobian, "probe with the D unit vectors: the exact norm");
  sub->add_flag("--per-row", a->per_row, "also write every batch row's value");
  sub->add_option("--seed", a->seed, "probe seed");
  sub->add_option("--device", a->device, "cpu | cuda (default: the run config's train.device, else cpu)")
      ->check(CLI::IsMember({"cpu", "cuda"}));
  sub->add_option("--out", a->out, "output JSONL")->required();
  sub->callback([a] { run_grads(*a); });
}

}  // namespace fbt::cli
