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
  scratch_ = Arena(d);
}

Var Tape::new_node(Tensor value, bool requires_grad) {
  nodes_.push_back(Node{value, Tensor{}, requires_grad, active_ == &scratch_});
  return Var(&nodes_.back());
}

Var Tape::leaf(const Shape& s, bool requires_grad) { return new_node(arena().alloc(s), requires_grad && grad_enabled_); }

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
                                  device_name(device()) + ": move the model with Model::to()");
    rg = rg || (grad_enabled_ && v.requires_grad());
  }
  return new_node(arena().alloc(s), rg);
}

Var Tape::output(const Shape& s, std::initializer_list<Var> inputs) { return output_of(s, inputs); }
Var Tape::output(const Shape& s, const std::vector<Var>& inputs) { return output_of(s, inputs); }

Var Tape::detach(Var v) { return new_node(v.value(), false); }

Var Tape::alias(Var v, bool requires_grad) { return new_node(v.value(), requires_grad && grad_enabled_); }

Tensor Tape::grad(Var v) {
  Node* n = v.node();
  if (!n->requires_grad) return Tensor{};
  if (!n->grad.data && n->value.numel()) n->grad = arena_of(n).zeros(n->value.shape);
  return n->grad;
}

Tape::GradSink Tape::grad_sink(Var v) {
  Node* n = v.node();
  if (!n->requires_grad) return {nullptr, true};
  if (n->grad.data || device() != Device::CPU || !n->value.numel()) return {grad(v).data, true};
  n->grad = arena_of(n).alloc(n->value.shape);  // unzeroed: the caller writes all of it
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
  sweep(0);
}

void Tape::sweep(size_t first) {
  std::vector<std::function<void()>> outer_end = std::move(sweep_end_);
  std::vector<DeferredWeightGrad> outer_deferred = std::move(deferred_);
  sweep_end_.clear();
  deferred_.clear();
  const uint64_t outer_serial = sweep_serial_;
  sweep_serial_ = ++sweeps_;
  for (size_t i = records_.size(); i-- > first;) {
    const Record& r = records_[i];
    if (!r.out || r.out->grad.data) {
      const profile::Scope prof(r.op, profile::Phase::Backward);
      r.backward();
    }
  }
  // Work queued for the end of the sweep (an op's deferred products); a hook may queue more.
  for (size_t i = 0; i < sweep_end_.size(); ++i) {
    std::function<void()> f = std::move(sweep_end_[i]);
    f();
  }
  sweep_end_ = std::move(outer_end);
  deferred_ = std::move(outer_deferred);
  sweep_serial_ = outer_serial;
}

void Tape::use_scratch(bool on) {
  staged_.clear();  // staged copies live in the arena being left
  if (on) {
    active_ = &scratch_;
  } else {
    active_ = &arena_;
    scratch_.reset();
  }
}

std::vector<Var> Tape::checkpoint(const char* op, std::function<std::vector<Var>(bool again)> f) {
  if (!grad_enabled_ || active_ == &scratch_) return f(false);
  const size_t first_node = nodes_.size(), first_record = records_.size();
  use_scratch(true);
  const std::vector<Var> inner = f(false);
  std::vector<std::pair<Tensor, bool>> kept;  // the outputs, copied into the step's arena
  for (const Var& v : inner) {
    const Tensor t = arena_.alloc(v.shape());
    copy_bytes(t.data, device(), v.data(), device(), sizeof(float) * size_t(t.numel()));
    kept.push_back({t, v.requires_grad()});
  }
  use_scratch(false);
  records_.resize(first_record);  // the backward comes from the recomputation
  nodes_.resize(first_node);
  std::vector<Var> outs;
  for (const auto& [t, rg] : kept) outs.push_back(new_node(t, rg));
  bool needed = false;
  for (const Var& v : outs) needed = needed || v.requires_grad();
  if (!needed) return outs;
  record(op, Var(), [this, f, outs] {
    const size_t nodes = nodes_.size(), records = records_.size();
    use_scratch(true);
    const std::vector<Var> again = f(true);
    for (size_t k = 0; k < outs.size(); ++k) {
      // The recomputed output takes its gradient in the kept output's buffer: what the records
      // after the checkpoint sent, to which the piece's own readers add.
      if (!outs[k].requires_grad()) continue;
      Node* n = again[k].node();
      if (n->requires_grad) n->grad = grad(outs[k]);
    }
    sweep(records);
    records_.resize(records);
    nodes_.resize(nodes);
    use_scratch(false);
  });
  return outs;
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
  void* p = arena().alloc_floats((bytes + sizeof(float) - 1) / sizeof(float));
  cuda::upload(p, host, bytes);
  if (staged_.size() == kKept) staged_.pop_front();
  const char* h = static_cast<const char*>(host);
  staged_.push_back({std::vector<char>(h, h + bytes), p});
  return p;
}

void Tape::reset() {
  sweep_end_.clear();
  deferred_.clear();
  staged_.clear();
  records_.clear();
  nodes_.clear();
  active_ = &arena_;
  arena_.reset();
  scratch_.reset();
}

}  // namespace fbt
