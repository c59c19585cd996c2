#include "autograd/tape.hpp"

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include "backend/profile.hpp"
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
  // Work queued for the end of the sweep (an op's deferred products); a hook may queue more.
  for (size_t i = 0; i < sweep_end_.size(); ++i) {
    std::function<void()> f = std::move(sweep_end_[i]);
    f();
  }
  sweep_end_.clear();
}

void Tape::zero_grad() {
  for (Node& n : nodes_)
    if (n.grad.data) fill_zero(n.grad.device, n.grad.data, size_t(n.grad.numel()));
}

const void* Tape::stage_on_device(const void* host, size_t bytes) {
  constexpr size_t kKept = 8;
  if (bytes == 0) return nullptr;  // an empty table (host may be null): nothing to stage
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
  sweep_end_.clear();
  staged_.clear();
  records_.clear();
  nodes_.clear();
  arena_.reset();
}

}  // namespace fbt
