// The linear layer y = x W^T + b: its forward (packed weights for few rows while frozen), its
// input gradient in the sweep, and its weight gradient deferred to the sweep's end, where all the
// (dy, x) pairs of one weight become one large product.
#include <algorithm>
#include <cstring>
#include <memory>
#include <unordered_map>
#include <vector>

#include "backend/profile.hpp"
#include "ops/dispatch.hpp"
#include "ops/ops.hpp"
#include "util/check.hpp"

namespace fbt {

namespace {

// Weight gradients of linears, dW += dy^T x, are not computed one small product per op: the
// sweep collects the (dy, x) pairs of each weight and, at its end, runs one large GEMM per
// weight over all of them (rows stacked in record order, so the result is deterministic), or
// one GEMM per pair, in order, when every pair is already deep (windows of many rows). A bias
// gradient db (or null), db += column sums of dy, comes along in the same pass.
struct WeightGrad {
  float* dW;
  float* db;
  int64_t In, Out, rows = 0;
  std::vector<std::pair<const float*, const float*>> dy_x;  // per part: (dy, x)
  std::vector<int64_t> part_rows;
};

using WeightGrads = std::vector<WeightGrad>;

// A step weight's packs (cpu::pack_weight): W^T for the forward product, W for the input gradient.
struct Packs {
  const float* fwd = nullptr;
  const float* bwd = nullptr;
};

// The packs in use, by weight: written when a store freezes or thaws (between ops), read by the
// linear op. Never destroyed, so a model that outlives static destruction still finds it.
std::unordered_map<const Node*, Packs>& live_packs() {
  static auto* packs = new std::unordered_map<const Node*, Packs>();
  return *packs;
}

Packs packs_of(Var W) {
  const auto& live = live_packs();
  if (live.empty()) return {};
  const auto it = live.find(W.node());
  return it == live.end() ? Packs{} : it->second;
}

// One store's step weights, packed at each freeze into storage kept from one freeze to the next.
class StepWeightPacks {
 public:
  explicit StepWeightPacks(std::vector<Var> weights) : weights_(std::move(weights)) {}
  ~StepWeightPacks() { unpack(); }
  StepWeightPacks(const StepWeightPacks&) = delete;
  StepWeightPacks& operator=(const StepWeightPacks&) = delete;

  void pack() {
    if (weights_.empty() || weights_[0].value().device != Device::CPU) return;  // the packs serve the CPU kernels
    const profile::Scope prof("pack step weights", profile::Phase::Optimizer);
    size_t total = 0;
    for (const Var& W : weights_) total += size_t(cpu::packed_floats(W.shape()[1], W.shape()[0]) +
                                                  cpu::packed_floats(W.shape()[0], W.shape()[1]));
    if (storage_.size() != total) storage_ = DeviceBuffer(Device::CPU, total);  // vector-aligned: see pack_weight
    float* at = storage_.data();
    for (const Var& W : weights_) {
      const int64_t Out = W.shape()[0], In = W.shape()[1];
      float* fwd = at;                                // W^T: (In, Out)
      float* bwd = at + cpu::packed_floats(In, Out);  // W: (Out, In)
      cpu::pack_weight(fwd, bwd, W.data(), Out, In);
      live_packs()[W.node()] = {fwd, bwd};
      at = bwd + cpu::packed_floats(Out, In);
    }
  }
  void unpack() {
    for (const Var& W : weights_) live_packs().erase(W.node());
  }

 private:
  std::vector<Var> weights_;
  DeviceBuffer storage_;
};

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

void flush_weight_grads(WeightGrads& grads) {
  const profile::Scope prof("weight gradients", profile::Phase::Backward);
  const Device d = tape().device();
  constexpr int64_t kDeepPart = 128;  // rows: a GEMM this deep runs at full speed on its own
  for (WeightGrad& w : grads) {
    if (d == Device::CPU) {  // one product over the parts where they lie
      std::vector<cpu::RowPart> parts;
      for (size_t k = 0; k < w.dy_x.size(); ++k) parts.push_back({w.dy_x[k].first, w.dy_x[k].second, w.part_rows[k]});
      cpu::linear_backward_weight_parts(w.dW, w.db, parts.data(), int(parts.size()), w.In, w.Out);
      continue;
    }
    // One part, or parts deep enough for a full-speed GEMM each (windows of many rows): in order.
    if (w.dy_x.size() == 1 || *std::min_element(w.part_rows.begin(), w.part_rows.end()) >= kDeepPart) {
      for (size_t k = 0; k < w.dy_x.size(); ++k)
        cuda::linear_backward(nullptr, w.dW, w.db, w.dy_x[k].first, w.dy_x[k].second, nullptr, w.part_rows[k], w.In,
                              w.Out);
      continue;
    }
    std::vector<const float*> dys, xs;
    for (const auto& [dy, x] : w.dy_x) dys.push_back(dy), xs.push_back(x);
    cuda::linear_backward(nullptr, w.dW, w.db, stack(dys, w.part_rows, w.Out), stack(xs, w.part_rows, w.In), nullptr,
                          w.rows, w.In, w.Out);
  }
  grads.clear();
}

}  // namespace

void defer_weight_grad(float* dW, float* db, const float* dy, const float* x, int64_t N, int64_t In, int64_t Out) {
  // This thread's pairs of the sweep in progress, owned by the hook that flushes them: a sweep
  // that ends (or a tape reset that drops the hook) leaves nothing behind for the next one. A
  // checkpoint's recomputation is a sweep of its own and flushes its pairs when it ends (their
  // rows are freed then); cpu::gemm's chains make that the same floats as one product.
  thread_local std::weak_ptr<WeightGrads> current;
  thread_local uint64_t current_sweep = 0;
  std::shared_ptr<WeightGrads> pending = current.lock();
  if (!pending || current_sweep != tape().sweep_id()) {
    pending = std::make_shared<WeightGrads>();
    current = pending;
    current_sweep = tape().sweep_id();
    tape().at_sweep_end([pending] { flush_weight_grads(*pending); });
  }
  WeightGrads& grads = *pending;
  WeightGrad* wg = nullptr;
  for (WeightGrad& w : grads)  // a handful of weights per model: a scan is enough
    if (w.dW == dW) wg = &w;
  if (!wg) {
    grads.push_back(WeightGrad{dW, db, In, Out, 0, {}, {}});
    wg = &grads.back();
  }
  wg->dy_x.push_back({dy, x});
  wg->part_rows.push_back(N);
  wg->rows += N;
}

int64_t linear_packed_max_rows() { return cpu::kPackedRows; }

void pack_for_steps(ParamStore& params, const std::vector<Var>& weights) {
  std::vector<Var> distinct;
  for (const Var& W : weights) {
    check(W.shape().nd == 2, "pack_for_steps: ", W.shape(), " is not 2-D");
    if (std::find(distinct.begin(), distinct.end(), W) == distinct.end()) distinct.push_back(W);
  }
  auto packs = std::make_shared<StepWeightPacks>(std::move(distinct));
  params.on_freeze([packs](bool frozen) { frozen ? packs->pack() : packs->unpack(); });
}

bool is_packed(Var W) { return packs_of(W).fwd != nullptr; }

void linear_values(float* y, const float* x, Var W, const float* b, int64_t N) {
  const int64_t Out = W.shape()[0], In = W.shape()[1];
  if (on_device()) cuda::linear_forward(y, x, W.data(), b, N, In, Out);
  else cpu::linear_forward_packed(y, x, W.data(), packs_of(W).fwd, b, N, In, Out);
}

void linear_input_grad(float* dx, const float* dy, Var W, int64_t N, bool accumulate) {
  const int64_t Out = W.shape()[0], In = W.shape()[1];
  if (!on_device())
    return cpu::linear_backward_input_packed(dx, dy, W.data(), packs_of(W).bwd, N, In, Out, accumulate);
  if (!accumulate) fill_zero(Device::CUDA, dx, size_t(N * In));  // the device kernels add
  cuda::linear_backward(dx, nullptr, nullptr, dy, nullptr, W.data(), N, In, Out);
}

Var linear(Var x, Var W, Var b) {
  const profile::Scope prof("linear", profile::Phase::Forward);
  const int64_t Out = W.shape()[0], In = W.shape()[1], N = x.value().rows();
  check(W.shape().nd == 2 && x.shape()[-1] == In, "linear: x ", x.shape(), " does not match W ", W.shape());
  check(!b || (b.shape().nd == 1 && b.shape()[0] == Out), "linear: bias ", b ? b.shape() : Shape{}, " vs W ", W.shape());
  Shape ys = x.shape();
  ys[-1] = Out;
  Var y = tape().output(ys, {x, W, b});
  linear_values(y.data(), x.data(), W, b ? b.data() : nullptr, N);
  if (y.requires_grad())
    tape().record("linear", y, [=] {
      Tape& t = tape();
      if (const Tape::GradSink dx = t.grad_sink(x); dx.data)
        linear_input_grad(dx.data, y.grad().data, W, N, dx.accumulate);
      float* db = b && b.requires_grad() ? t.grad(b).data : nullptr;
      if (W.requires_grad()) defer_weight_grad(t.grad(W).data, db, y.grad().data, x.data(), N, In, Out);
      else if (db && on_device()) cuda::linear_backward(nullptr, nullptr, db, y.grad().data, nullptr, nullptr, N, In, Out);
      else if (db) cpu::bias_backward(db, y.grad().data, N, Out);
    });
  return y;
}

}  // namespace fbt
