#include "autograd/tape.hpp"

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include "backend/profile.hpp"
#include "backend/cpu/kernels.hpp"
#include "backend/cuda/kernels.hpp"

namespace fbt {

Tape& tape() {
  thread_local Tape t;
  return t;
}

void Tape::set_device(Device d) {
  if (d == arena_.device()) return;
  if (!nodes_.empty() || !records_.empty())
    throw std::logic_error(std::string("the tape holds a step on ") + device_name(arena_.device()) + ", not " +
                           device_name(d) + ": end that step (StepScope) before running one on the other device");
  require_device(d);
  arena_ = Arena(d);
}

Var Tape::leaf(const Shape& s, bool requires_grad) {
  nodes_.push_back(Node{arena_.alloc(s), Tensor{}, requires_grad && grad_enabled_});
  return Var(&nodes_.back());
}

Var Tape::leaf_copy(const Tensor& src, bool requires_grad) {
  Var v = leaf(src.shape, requires_grad);
  copy_bytes(v.data(), device(), src.data, src.device, sizeof(float) * size_t(src.numel()));
  return v;
}

template <class Inputs>
Var Tape::output_of(const Shape& s, const Inputs& inputs) {
  bool rg = false;
  for (const Var& v : inputs) {
    if (v && v.value().device != device())
      throw std::invalid_argument(std::string("an op's input is on ") + device_name(v.value().device) + ", the tape on " +
                                  device_name(device()) + ": move the model with FeedbackTransformer::to()");
    rg = rg || (grad_enabled_ && v.requires_grad());
  }
  nodes_.push_back(Node{arena_.alloc(s), Tensor{}, rg});
  return Var(&nodes_.back());
}

Var Tape::output(const Shape& s, std::initializer_list<Var> inputs) { return output_of(s, inputs); }
Var Tape::output(const Shape& s, const std::vector<Var>& inputs) { return output_of(s, inputs); }

Var Tape::detach(Var v) {
  nodes_.push_back(Node{v.value(), Tensor{}, false});
  return Var(&nodes_.back());
}

Var Tape::alias(Var v, bool requires_grad) {
  nodes_.push_back(Node{v.value(), Tensor{}, requires_grad && grad_enabled_});
  return Var(&nodes_.back());
}

Tensor Tape::grad(Var v) {
  Node* n = v.node();
  if (!n->requires_grad) return Tensor{};
  if (!n->grad.data && n->value.numel()) n->grad = arena_.zeros(n->value.shape);
  return n->grad;
}

Tape::GradSink Tape::grad_sink(Var v) {
  Node* n = v.node();
  if (!n->requires_grad) return {nullptr, true};
  if (n->grad.data || device() != Device::CPU || !n->value.numel()) return {grad(v).data, true};
  n->grad = arena_.alloc(n->value.shape);  // unzeroed: the caller writes all of it
  return {n->grad.data, false};
}

void Tape::backward(Var out) {
  if (out.value().numel() != 1)
    throw std::invalid_argument("backward(): output has shape " + out.shape().str() +
                                "; pass a seed gradient for non-scalar outputs");
  float one = 1.0f;
  backward(out, Tensor{&one, out.shape(), Device::CPU});
}

void Tape::backward(Var out, const Tensor& seed) {
  if (seed.shape != out.shape())
    throw std::invalid_argument("backward(): seed " + seed.shape.str() + " vs output " + out.shape().str());
  if (!out.requires_grad()) return;
  Tensor g = grad(out);
  if (g.device == Device::CPU) {
    const std::vector<float> s = to_host(seed);
    for (int64_t i = 0; i < g.numel(); ++i) g.data[i] += s[size_t(i)];
  } else {  // a host seed is staged (queued: no wait for the forward); a device seed is read in place
    const float* s = seed.device == Device::CPU
                         ? static_cast<const float*>(stage_on_device(seed.data, sizeof(float) * size_t(seed.numel())))
                         : seed.data;
    cuda::axpy(g.data, 1.f, s, g.numel());
  }
  for (auto it = records_.rbegin(); it != records_.rend(); ++it)
    if (!it->out || it->out->grad.data) {
      const profile::Scope prof(it->op, profile::Phase::Backward);
      it->backward();
    }
  flush_weight_grads();
}

void Tape::defer_weight_grad(float* dW, float* db, const float* dy, const float* x, int64_t N, int64_t In, int64_t Out) {
  WeightGrad* wg = nullptr;
  for (WeightGrad& w : weight_grads_)  // a handful of weights per model: a scan is enough
    if (w.dW == dW) wg = &w;
  if (!wg) {
    weight_grads_.push_back(WeightGrad{dW, db, In, Out, 0, {}, {}});
    wg = &weight_grads_.back();
  }
  wg->dy_x.push_back({dy, x});
  wg->part_rows.push_back(N);
  wg->rows += N;
}

namespace {
// dW += dy^T x and db += column sums of dy over N rows, on the tape's device.
void weight_grad(Device d, float* dW, float* db, const float* dy, const float* x, int64_t N, int64_t In, int64_t Out) {
  if (d == Device::CUDA) return cuda::linear_backward(nullptr, dW, db, dy, x, nullptr, N, In, Out);
  cpu::linear_backward_weight(dW, dy, x, N, In, Out);
  if (db) cpu::bias_backward(db, dy, N, Out);
}
}  // namespace

float* Tape::stack(const std::vector<const float*>& parts, const std::vector<int64_t>& part_rows, int64_t cols) {
  std::vector<int64_t> at(parts.size() + 1, 0);  // first float of each part in the stack
  for (size_t k = 0; k < parts.size(); ++k) at[k + 1] = at[k] + part_rows[k] * cols;
  float* dst = arena_.alloc_floats(size_t(at.back()));
  if (device() == Device::CUDA) {  // one gather kernel; its tables staged on the device
    cuda::gather(dst, static_cast<const float* const*>(stage_on_device(parts.data(), parts.size() * sizeof(float*))),
                 static_cast<const int64_t*>(stage_on_device(at.data(), at.size() * sizeof(int64_t))),
                 int64_t(parts.size()), at.back());
    return dst;
  }
#pragma omp parallel for
  for (size_t k = 0; k < parts.size(); ++k)
    std::memcpy(dst + at[k], parts[k], sizeof(float) * size_t(at[k + 1] - at[k]));
  return dst;
}

void Tape::flush_weight_grads() {
  const profile::Scope prof("weight gradients", profile::Phase::Backward);
  constexpr int64_t kDeepPart = 128;  // rows: a GEMM this deep runs at full speed on its own
  for (WeightGrad& w : weight_grads_) {
    // One part, or parts deep enough for a full-speed GEMM each (windows of many rows): in order.
    if (w.dy_x.size() == 1 || *std::min_element(w.part_rows.begin(), w.part_rows.end()) >= kDeepPart) {
      for (size_t k = 0; k < w.dy_x.size(); ++k)
        weight_grad(device(), w.dW, w.db, w.dy_x[k].first, w.dy_x[k].second, w.part_rows[k], w.In, w.Out);
      continue;
    }
    std::vector<const float*> dys, xs;
    for (const auto& [dy, x] : w.dy_x) dys.push_back(dy), xs.push_back(x);
    weight_grad(device(), w.dW, w.db, stack(dys, w.part_rows, w.Out), stack(xs, w.part_rows, w.In), w.rows, w.In, w.Out);
  }
  weight_grads_.clear();
}

void Tape::zero_grad() {
  for (Node& n : nodes_)
    if (n.grad.data) fill_zero(n.grad.device, n.grad.data, size_t(n.grad.numel()));
}

const void* Tape::stage_on_device(const void* host, size_t bytes) {
  constexpr size_t kKept = 8;
  for (const Staged& s : staged_)
    if (s.bytes.size() == bytes && std::memcmp(s.bytes.data(), host, bytes) == 0) return s.device;
  void* p = arena_.alloc_floats((bytes + sizeof(float) - 1) / sizeof(float));
  cuda::upload(p, host, bytes);
  if (staged_.size() == kKept) staged_.pop_front();
  const char* h = static_cast<const char*>(host);
  staged_.push_back({std::vector<char>(h, h + bytes), p});
  return p;
}

void Tape::reset() {
  staged_.clear();
  records_.clear();
  nodes_.clear();
  arena_.reset();
}

}  // namespace fbt
