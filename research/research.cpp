#include "research/research.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <map>

#include "ops/ops.hpp"
#include "util/check.hpp"

namespace fbt {

namespace {

// The squared norm of row `row` of v's gradient (after a backward).  v:(..., D)
double row_grad_norm_sq(Var v, int64_t row, int64_t D) {
  Tensor g = tape().grad(v);
  std::vector<float> x(static_cast<size_t>(D));
  copy_bytes(x.data(), Device::CPU, g.data + row * D, g.device, sizeof(float) * x.size());
  double s = 0;
  for (float e : x) s += double(e) * e;
  return s;
}

// The squared norm of row b of call step u's memory vector gradient (after a backward).
double vector_grad_norm_sq(const ForwardOutput& o, int64_t u, int64_t b, int64_t D) {
  size_t w = size_t(std::upper_bound(o.written_start.begin(), o.written_start.end(), u) - o.written_start.begin()) - 1;
  const Var& v = o.written[w];
  return row_grad_norm_sq(v, b * v.shape()[1] + (u - o.written_start[w]), D);
}

// A call recording, and the backward of the loss at its last position alone.
ForwardOutput last_position_backward(Model& model, const CallBatch& b, const DetachPolicy& policy) {
  model.params().zero_grad();
  ForwardOutput o = forward_batch(model, b, policy, /*with_targets=*/false);
  Var last = slice(o.logits, 1, b.T - 1, 1);  // (B,1,V)
  std::vector<int32_t> tg(static_cast<size_t>(b.B));
  for (int64_t r = 0; r < b.B; ++r) tg[size_t(r)] = b.targets[size_t(r * b.T + b.T - 1)];
  tape().backward(cross_entropy(last, tg.data()));
  return o;
}

}  // namespace

std::vector<std::vector<double>> grad_norm_by_lag(Model& model, const CallBatch& b,
                                                  const DetachPolicy& policy) {
  const int64_t D = model.config().dim, T = b.T, B = b.B;
  check(!is_baseline(model), "gradient norm by memory lag: the transformer_xl model has no shared memory; measure it per "
                             "layer (grad_norm_by_lag_per_layer)");
  const StepScope scope(model.device());
  const ForwardOutput o = last_position_backward(model, b, policy);
  std::vector<std::vector<double>> out(size_t(std::max<int64_t>(0, T - 1)), std::vector<double>(size_t(B)));
  for (int64_t u = 0; u + 1 < T; ++u)
    for (int64_t r = 0; r < B; ++r) out[size_t(T - 2 - u)][size_t(r)] = std::sqrt(vector_grad_norm_sq(o, u, r, D));
  return out;
}

std::vector<std::vector<std::vector<double>>> grad_norm_by_lag_per_layer(Model& model, const CallBatch& b) {
  const int64_t D = model.config().dim, T = b.T, B = b.B;
  const StepScope scope(model.device());
  const ForwardOutput o = last_position_backward(model, b, DetachPolicy{});
  check(!o.layer_inputs.empty(), "gradient norm by lag per layer: only the transformer_xl model reports its layers' inputs");
  std::vector<std::vector<std::vector<double>>> out(
      o.layer_inputs.size(), std::vector<std::vector<double>>(size_t(std::max<int64_t>(0, T - 1)), std::vector<double>(size_t(B))));
  for (size_t l = 0; l < o.layer_inputs.size(); ++l)
    for (int64_t u = 0; u + 1 < T; ++u)
      for (int64_t r = 0; r < B; ++r)
        out[l][size_t(T - 2 - u)][size_t(r)] = std::sqrt(row_grad_norm_sq(o.layer_inputs[l], r * T + u, D));
  return out;
}

std::vector<double> parameter_gradient(Model& model, const CallBatch& b, const DetachPolicy& policy) {
  const StepScope scope(model.device());
  model.params().zero_grad();
  ForwardOutput o = forward_batch(model, b, policy);
  tape().backward(o.loss);
  model.params().sync_to_host();
  return std::vector<double>(model.params().grads().begin(), model.params().grads().end());
}

std::string param_group(const std::string& name) {
  if (name.rfind("layers.", 0) == 0) return name.substr(0, name.find('.', 7));
  if (name.rfind("mem_norm", 0) == 0 || name.rfind("shared_kv", 0) == 0) return "memory";
  if (name.rfind("out_norm", 0) == 0 || name.rfind("to_logits", 0) == 0) return "output";
  return name.substr(0, name.find('.'));
}

std::vector<BiasRow> truncation_bias(const Model& model, const std::vector<double>& g,
                                     const std::vector<double>& g_none) {
  struct Acc {
    double diff = 0, dot = 0, gg = 0, nn = 0;
  };
  std::map<std::string, Acc> groups;
  std::vector<std::string> order{"all"};
  const ParamStore& ps = model.params();
  for (size_t i = 0; i < ps.size(); ++i) {
    const std::string grp = param_group(ps.names()[i]);
    if (!groups.count(grp)) order.push_back(grp);
    for (Acc* a : {&groups[grp], &groups["all"]})
      for (size_t k = ps.offset(i); k < ps.offset(i) + size_t(ps.at(i).value().numel()); ++k) {
        a->diff += (g[k] - g_none[k]) * (g[k] - g_none[k]);
        a->dot += g[k] * g_none[k];
        a->gg += g[k] * g[k];
        a->nn += g_none[k] * g_none[k];
      }
  }
  std::vector<BiasRow> rows;
  for (const std::string& grp : order) {
    const Acc& a = groups[grp];
    BiasRow r{grp, a.nn > 0 ? std::sqrt(a.diff / a.nn) : 0.0, (a.gg > 0 && a.nn > 0) ? a.dot / std::sqrt(a.gg * a.nn) : 0.0};
    rows.push_back(r);
  }
  return rows;
}

std::vector<std::vector<double>> jacobian_sq_norms(Model& model, const CallBatch& b,
                                                   const DetachPolicy& policy, int64_t probes, uint64_t seed,
                                                   bool exact) {
  check(!is_baseline(model), "Jacobian norms across time: the transformer_xl model has no memory vectors to differentiate");
  const int64_t D = model.config().dim, T = b.T, B = b.B;
  const StepScope scope(model.device());
  model.params().zero_grad();
  ForwardOutput o = forward_batch(model, b, policy, /*with_targets=*/false);
  const Var target = o.written.back();  // holds m_{T-1} as its last row
  const int64_t n = target.shape()[1];
  std::vector<std::vector<double>> out(size_t(std::max<int64_t>(0, T - 1)), std::vector<double>(size_t(B), 0.0));
  const int64_t count = exact ? D : probes;
  Rng rng(seed);
  std::vector<float> seed_grad(size_t(B * n * D));
  for (int64_t p = 0; p < count; ++p) {
    std::fill(seed_grad.begin(), seed_grad.end(), 0.f);
    for (int64_t r = 0; r < B; ++r)
      for (int64_t j = 0; j < D; ++j)
        seed_grad[size_t((r * n + n - 1) * D + j)] = exact ? (j == p ? 1.f : 0.f) : rng.normal();
    tape().zero_grad();
    tape().backward(target, Tensor{seed_grad.data(), target.shape(), Device::CPU});
    for (int64_t u = 0; u + 1 < T; ++u)
      for (int64_t r = 0; r < B; ++r) out[size_t(T - 2 - u)][size_t(r)] += vector_grad_norm_sq(o, u, r, D);
  }
  if (!exact)
    for (auto& row : out)
      for (double& v : row) v /= double(count);
  return out;
}

std::vector<double> layer_mix(const Model& model) {
  const std::vector<float> w = to_host(model.params().get("layer_weight").value());
  const int64_t K = int64_t(w.size());
  double mx = -1e300, sum = 0;
  for (int64_t k = 0; k < K; ++k) mx = std::max(mx, double(w[size_t(k)]));
  std::vector<double> a(static_cast<size_t>(K));
  for (int64_t k = 0; k < K; ++k) sum += (a[size_t(k)] = std::exp(double(w[size_t(k)]) - mx));
  for (double& v : a) v /= sum;
  return a;
}

namespace {
double mean_of(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return v.empty() ? 0.0 : s / double(v.size());
}
}  // namespace

std::string probe_metrics(Model& model, const CallBatch& batch, const DetachPolicy& policy, int64_t step) {
  nlohmann::json j = {{"split", "probe"}, {"step", step}};
  if (is_baseline(model)) {  // per layer; no memory mix
    std::vector<std::vector<double>> by_layer;
    for (const auto& lags : grad_norm_by_lag_per_layer(model, batch)) {
      by_layer.emplace_back();
      for (const auto& rows : lags) by_layer.back().push_back(mean_of(rows));
    }
    j["lag_grad_norm_by_layer"] = by_layer;
    return j.dump();
  }
  std::vector<double> mean;
  for (const auto& rows : grad_norm_by_lag(model, batch, policy)) mean.push_back(mean_of(rows));
  j["lag_grad_norm"] = mean;
  j["layer_mix"] = layer_mix(model);
  return j.dump();
}

}  // namespace fbt
