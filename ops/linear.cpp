// The linear layer y = x W^T + b: its forward (a model's packed step weights for few rows while
// frozen), its input gradient in the sweep, and its weight gradient deferred to the sweep's end,
// where all the (dy, x) pairs of one weight become one large product.
#include <algorithm>
#include <cstring>
#include <memory>
#include <vector>

#include "backend/profile.hpp"
#include "ops/dispatch.hpp"
#include "ops/ops.hpp"
#include "util/check.hpp"

namespace fbt {

// ---- the step weights' packs ----

StepWeightPacks::StepWeightPacks(std::vector<Var> weights) : weights_(std::move(weights)), packs_(weights_.size()) {}

std::shared_ptr<StepWeightPacks> StepWeightPacks::make(ParamStore& params, const std::vector<Var>& weights) {
  std::vector<Var> distinct;
  for (const Var& W : weights) {
    check(W.shape().nd == 2, "StepWeightPacks: ", W.shape(), " is not 2-D");
    if (std::find(distinct.begin(), distinct.end(), W) == distinct.end()) distinct.push_back(W);
  }
  std::shared_ptr<StepWeightPacks> packs(new StepWeightPacks(std::move(distinct)));
  params.on_freeze([packs](bool frozen) {
    if (frozen) packs->pack();
    else std::fill(packs->packs_.begin(), packs->packs_.end(), Packs{});  // thawed: the weights may change
  });
  return packs;
}

void StepWeightPacks::pack() {
  if (weights_.empty() || weights_[0].value().device != Device::CPU) return;  // the packs serve the CPU kernels
  const profile::Scope prof("pack step weights", profile::Phase::Optimizer);
  size_t total = 0;
  for (const Var& W : weights_) total += size_t(cpu::packed_floats(W.shape()[1], W.shape()[0]) +
                                                cpu::packed_floats(W.shape()[0], W.shape()[1]));
  if (storage_.size() != total) storage_ = DeviceBuffer(Device::CPU, total);  // vector-aligned: see pack_weight
  float* at = storage_.data();
  for (size_t i = 0; i < weights_.size(); ++i) {
    const Var& W = weights_[i];
    const int64_t Out = W.shape()[0], In = W.shape()[1];
    float* fwd = at;                                // W^T: (In, Out)
    float* bwd = at + cpu::packed_floats(In, Out);  // W: (Out, In)
    cpu::pack_weight(fwd, bwd, W.data(), Out, In);
    packs_[i] = {fwd, bwd};
    at = bwd + cpu::packed_floats(Out, In);
  }
}

StepWeightPacks::Packs StepWeightPacks::of(Var W) const {
  for (size_t i = 0; i < weights_.size(); ++i)  // a handful of weights per model: a scan is enough
    if (weights_[i] == W) return packs_[i];
  return {};
}

namespace {

StepWeightPacks::Packs packs_of(const StepWeightPacks* packs, Var W) { return packs ? packs->of(W) : StepWeightPacks::Packs{}; }

// ---- deferred weight gradients ----
// A linear's dW += dy^T x is not computed one small product per op: the sweep collects the
// (dy, x) pairs (the tape keeps them with the sweep: Tape::deferred_weight_grads) and, at its
// end, runs one large GEMM per weight over all of its pairs, in the order the sweep met them (so
// the result is deterministic). A bias gradient db (or null), db += column sums of dy, comes along.

// The parts (part_rows[k] x cols each) laid end to end in the device arena, by one gather kernel.
float* stack(const std::vector<const float*>& parts, const std::vector<int64_t>& part_rows, int64_t cols) {
  std::vector<int64_t> at(parts.size() + 1, 0);  // first float of each part in the stack
  for (size_t k = 0; k < parts.size(); ++k) at[k + 1] = at[k] + part_rows[k] * cols;
  Tape& t = tape();
  float* dst = t.arena().alloc_floats(size_t(at.back()));
  cuda::gather(dst, static_cast<const float* const*>(t.stage_on_device(parts.data(), parts.size() * sizeof(float*))),
               static_cast<const int64_t*>(t.stage_on_device(at.data(), at.size() * sizeof(int64_t))),
               int64_t(parts.size()), at.back());
  return dst;
}

constexpr int64_t kDeepPart = 128;  // rows: a device GEMM this deep runs at full speed on its own

// One weight's pairs, in order, on the tape's device.
void weight_grad(const std::vector<Tape::DeferredWeightGrad>& pairs) {
  const Tape::DeferredWeightGrad& w = pairs.front();
  if (tape().device() == Device::CPU) {  // one product over the parts where they lie
    std::vector<cpu::RowPart> parts;
    for (const auto& p : pairs) parts.push_back({p.dy, p.x, p.rows});
    return cpu::linear_backward_weight_parts(w.dW, w.db, parts.data(), int(parts.size()), w.In, w.Out);
  }
  // One part, or parts deep enough for a full-speed GEMM each (windows of many rows): in order.
  const bool deep = std::all_of(pairs.begin(), pairs.end(), [](const auto& p) { return p.rows >= kDeepPart; });
  if (pairs.size() == 1 || deep) {
    for (const auto& p : pairs) cuda::linear_backward(nullptr, p.dW, p.db, p.dy, p.x, nullptr, p.rows, p.In, p.Out);
    return;
  }
  std::vector<const float*> dys, xs;
  std::vector<int64_t> rows;
  int64_t total = 0;
  for (const auto& p : pairs) dys.push_back(p.dy), xs.push_back(p.x), rows.push_back(p.rows), total += p.rows;
  cuda::linear_backward(nullptr, w.dW, w.db, stack(dys, rows, w.Out), stack(xs, rows, w.In), nullptr, total, w.In, w.Out);
}

// The sweep's deferred pairs, weight by weight in the order of their first pair.
void flush_weight_grads() {
  const profile::Scope prof("weight gradients", profile::Phase::Backward);
  std::vector<Tape::DeferredWeightGrad>& all = tape().deferred_weight_grads();
  std::vector<std::vector<Tape::DeferredWeightGrad>> by_weight;  // each weight's pairs, in order
  for (const Tape::DeferredWeightGrad& p : all) {
    auto it = std::find_if(by_weight.begin(), by_weight.end(), [&](const auto& w) { return w.front().dW == p.dW; });
    if (it == by_weight.end()) by_weight.push_back({p});  // a handful of weights per model: a scan is enough
    else it->push_back(p);
  }
  for (const auto& pairs : by_weight) weight_grad(pairs);
  all.clear();
}

}  // namespace

void defer_weight_grad(float* dW, float* db, const float* dy, const float* x, int64_t N, int64_t In, int64_t Out) {
  std::vector<Tape::DeferredWeightGrad>& pending = tape().deferred_weight_grads();
  if (pending.empty()) tape().at_sweep_end(flush_weight_grads);  // the sweep's first: run them when it ends
  pending.push_back({dW, db, dy, x, N, In, Out});
}

int64_t linear_packed_max_rows() { return cpu::kPackedRows; }

void linear_values(float* y, const float* x, Var W, const float* b, int64_t N, const StepWeightPacks* packs) {
  const int64_t Out = W.shape()[0], In = W.shape()[1];
  if (on_device()) cuda::linear_forward(y, x, W.data(), b, N, In, Out);
  else cpu::linear_forward_packed(y, x, W.data(), packs_of(packs, W).fwd, b, N, In, Out);
}

void linear_input_grad(float* dx, const float* dy, Var W, int64_t N, bool accumulate, const StepWeightPacks* packs) {
  const int64_t Out = W.shape()[0], In = W.shape()[1];
  if (!on_device())
    return cpu::linear_backward_input_packed(dx, dy, W.data(), packs_of(packs, W).bwd, N, In, Out, accumulate);
  if (!accumulate) fill_zero(Device::CUDA, dx, size_t(N * In));  // the device kernels add
  cuda::linear_backward(dx, nullptr, nullptr, dy, nullptr, W.data(), N, In, Out);
}

Var linear(Var x, Var W, Var b, const StepWeightPacks* packs) {
  const profile::Scope prof("linear", profile::Phase::Forward);
  const int64_t Out = W.shape()[0], In = W.shape()[1], N = x.value().rows();
  check(W.shape().nd == 2 && x.shape()[-1] == In, "linear: x ", x.shape(), " does not match W ", W.shape());
  check(!b || (b.shape().nd == 1 && b.shape()[0] == Out), "linear: bias ", b ? b.shape() : Shape{}, " vs W ", W.shape());
  Shape ys = x.shape();
  ys[-1] = Out;
  Var y = tape().output(ys, {x, W, b});
  linear_values(y.data(), x.data(), W, b ? b.data() : nullptr, N, packs);
  if (y.requires_grad())
    tape().record("linear", y, [=] {  // the packs as they are in the backward (gone if thawed since)
      Tape& t = tape();
      if (const Tape::GradSink dx = t.grad_sink(x); dx.data)
        linear_input_grad(dx.data, y.grad().data, W, N, dx.accumulate, packs);
      float* db = b && b.requires_grad() ? t.grad(b).data : nullptr;
      if (W.requires_grad()) defer_weight_grad(t.grad(W).data, db, y.grad().data, x.data(), N, In, Out);
      else if (db && on_device()) cuda::linear_backward(nullptr, nullptr, db, y.grad().data, nullptr, nullptr, N, In, Out);
      else if (db) cpu::bias_backward(db, y.grad().data, N, Out);
    });
  return y;
}

}  // namespace fbt
