// fbt.research: the numbers of `fbt grads` on the user's own arrays (research/research.hpp).
#include <cmath>
#include <string>
#include <vector>

#include "python/models.hpp"
#include "research/research.hpp"

namespace fbt::python {

using namespace pybind11::literals;

namespace {

template <class T>
py::array_t<double> to_array(const std::vector<std::vector<T>>& rows) {
  const int64_t n = int64_t(rows.size()), m = rows.empty() ? 0 : int64_t(rows[0].size());
  py::array_t<double> a({n, m});
  for (int64_t i = 0; i < n; ++i) std::copy(rows[size_t(i)].begin(), rows[size_t(i)].end(), a.mutable_data(i, 0));
  return a;
}

void require_feedback(const Model& model, const char* what) {
  if (is_baseline(model))
    throw std::invalid_argument(std::string(what) + " applies to the feedback model (the transformer_xl model has no "
                                                    "detachment policies and no memory vectors); use grad_by_lag");
}

py::object grad_by_lag(PyModel& pm, py::handle x, py::handle y, py::handle memory, py::handle context,
                       const std::string& detach) {
  Model& model = *pm.model;
  const CallBatch b = call_batch(model, x, y, memory, context);
  if (b.targets.empty()) throw std::invalid_argument("y: the targets are needed (the last position's loss)");
  if (!is_baseline(model)) {
    const DetachPolicy policy = detach_policy(model, detach);
    return to_array(without_gil([&] { return grad_norm_by_lag(model, b, policy); }));
  }
  if (detach != "none") throw std::invalid_argument("detach: the transformer_xl model has no detachment policies");
  const auto per_layer = without_gil([&] { return grad_norm_by_lag_per_layer(model, b); });
  const int64_t L = int64_t(per_layer.size()), K = int64_t(per_layer[0].size()), B = b.B;
  py::array_t<double> a({L, K, B});
  for (int64_t l = 0; l < L; ++l)
    for (int64_t k = 0; k < K; ++k)
      std::copy(per_layer[size_t(l)][size_t(k)].begin(), per_layer[size_t(l)][size_t(k)].end(), a.mutable_data(l, k, 0));
  return std::move(a);
}

py::dict truncation_bias_by_policy(PyModel& pm, py::handle x, py::handle y, py::handle memory, py::handle context,
                                   const std::vector<std::string>& policies) {
  Model& model = *pm.model;
  require_feedback(model, "truncation_bias");
  const CallBatch b = call_batch(model, x, y, memory, context);
  if (b.targets.empty()) throw std::invalid_argument("y: the targets are needed");
  std::vector<DetachPolicy> parsed;
  for (const std::string& p : policies) parsed.push_back(detach_policy(model, p));
  const auto rows = without_gil([&] {
    const std::vector<double> g_none = parameter_gradient(model, b, DetachPolicy{});
    std::vector<std::vector<BiasRow>> out;
    for (const DetachPolicy& p : parsed) out.push_back(truncation_bias(model, parameter_gradient(model, b, p), g_none));
    return out;
  });
  py::dict d;
  for (size_t i = 0; i < parsed.size(); ++i) {
    py::dict groups;
    for (const BiasRow& row : rows[i]) groups[py::str(row.group)] = py::dict("rel_error"_a = row.rel_error, "cosine"_a = row.cosine);
    d[py::str(parsed[i].str())] = groups;
  }
  return d;
}

py::array_t<double> jacobian_norms(PyModel& pm, py::handle x, py::handle memory, py::handle context,
                                   const std::string& detach, int64_t probes, uint64_t seed, bool exact) {
  Model& model = *pm.model;
  require_feedback(model, "jacobian_norms");
  if (probes < 1) throw std::invalid_argument("probes must be >= 1");
  const CallBatch b = call_batch(model, x, py::none(), memory, context);
  const DetachPolicy policy = detach_policy(model, detach);
  auto sq = without_gil([&] { return jacobian_sq_norms(model, b, policy, probes, seed, exact); });
  for (auto& row : sq)
    for (double& v : row) v = std::sqrt(v);
  return to_array(sq);
}

py::array_t<double> layer_mix_of(PyModel& pm) {
  require_feedback(*pm.model, "layer_mix");
  const std::vector<double> w = layer_mix(*pm.model);
  return py::array_t<double>(py::ssize_t(w.size()), w.data());
}

}  // namespace

void define_research(py::module_& m) {
  py::module_ r = m.def_submodule("research", "Gradient flow through the memory: the numbers of `fbt grads`.");
  py::module_::import("sys").attr("modules")["fbt.research"] = r;  // `from fbt.research import ...` finds it too
  r.def("grad_by_lag", &grad_by_lag, "model"_a, "x"_a, "y"_a, py::kw_only(), "memory"_a = py::none(),
        "context"_a = py::none(), "detach"_a = "none",
        "||d loss_last / d m_u|| of the call's last position's loss with respect to every memory vector the call "
        "wrote, by lag k = T-1-u: an array (T-1, B), row k-1 for lag k. For a TransformerXL, with respect to each "
        "layer's input: (depth, T-1, B).");
  r.def("truncation_bias", &truncation_bias_by_policy, "model"_a, "x"_a, "y"_a, py::kw_only(),
        "memory"_a = py::none(), "context"_a = py::none(),
        "policies"_a = std::vector<std::string>{"horizon:8", "horizon:32", "every:64", "all"},
        "How far each detachment policy's parameter gradient is from policy none's: {policy: {group: "
        "{'rel_error': ||g - g_none|| / ||g_none||, 'cosine': cos(g, g_none)}}}, groups 'all' and each parameter "
        "group.");
  r.def("jacobian_norms", &jacobian_norms, "model"_a, "x"_a, py::kw_only(), "memory"_a = py::none(),
        "context"_a = py::none(), "detach"_a = "none", "probes"_a = 16, "seed"_a = 1, "exact"_a = false,
        "||d m_{T-1} / d m_{T-1-k}||_F per batch row: an array (T-1, B), row k-1 for lag k; estimated with `probes` "
        "random vectors, or exact with the dim unit vectors.");
  r.def("layer_mix", &layer_mix_of, "model"_a,
        "softmax(layer_weight): how much each layer (the embedding first) contributes to the memory.");
}

}  // namespace fbt::python
