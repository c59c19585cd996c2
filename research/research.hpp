// Measurements of gradient flow through the feedback memory (docs/RESEARCH.md defines each):
//  - gradient norm by lag: || d loss_last / d m_u || for every memory vector m_u written in a call,
//    where loss_last is the mean cross-entropy at the call's last position;
//  - truncation bias: how far a detachment policy's parameter gradient is from policy none's;
//  - Jacobian norms across time: || d m_t / d m_{t-k} ||_F by random-probe vector-Jacobian products.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "models/call_batch.hpp"
#include "models/model.hpp"

namespace fbt {

// Per batch row b and lag k = T-1-u (u < T-1): ||d loss_last / d m_u[b]||_2; result[k-1][b].
std::vector<std::vector<double>> grad_norm_by_lag(Model& model, const CallBatch& batch,
                                                  const DetachPolicy& policy);

// The transformer_xl model: the same norm with respect to each layer's input at call step u,
// per layer l: result[l][k-1][b] (k = T-1-u).
std::vector<std::vector<std::vector<double>>> grad_norm_by_lag_per_layer(Model& model, const CallBatch& batch);

// Gradient of the mean loss over all positions under `policy`, as one flat vector in parameter
// block order.
std::vector<double> parameter_gradient(Model& model, const CallBatch& batch, const DetachPolicy& policy);

struct BiasRow {
  std::string group;  // "all" or a parameter group (param_group())
  double rel_error = 0, cosine = 0;
};
// ||g - g_none|| / ||g_none|| and cos(g, g_none), overall and per parameter group.
std::vector<BiasRow> truncation_bias(const Model& model, const std::vector<double>& g,
                                     const std::vector<double>& g_none);
// The group a parameter belongs to: "token_emb", "pos_bias", "memory" (mem_norm, shared_kv),
// "layer_weight", "layers.{l}", "output" (out_norm, to_logits).
std::string param_group(const std::string& name);

// Squared Frobenius norm estimates of d m_{T-1} / d m_{T-1-k} per batch row: result[k-1][b].
// With exact, the probes are the D unit vectors (the exact norm); else `probes` vectors v ~ N(0, I),
// using E ||J^T v||^2 = ||J||_F^2.
std::vector<std::vector<double>> jacobian_sq_norms(Model& model, const CallBatch& batch,
                                                   const DetachPolicy& policy, int64_t probes, uint64_t seed,
                                                   bool exact);

// One "probe" line for metrics.jsonl (Trainer::set_probe): the gradient norm of the last
// position's loss by memory lag (mean over the batch rows) on `batch`, and the memory mix weights.
std::string probe_metrics(Model& model, const CallBatch& batch, const DetachPolicy& policy, int64_t step);

// The softmax of layer_weight: how much each layer (embedding first) contributes to the memory.
std::vector<double> layer_mix(const Model& model);

}  // namespace fbt
