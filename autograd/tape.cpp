#include "autograd/tape.hpp"

#include <cstring>

namespace fbt {

Tape& tape() {
  thread_local Tape t;
  return t;
}

Var Tape::leaf(const Shape& s, bool requires_grad) {
  nodes_.push_back(Node{arena_.alloc(s), Tensor{}, requires_grad && grad_enabled_});
  return Var(&nodes_.back());
}

Var Tape::leaf_copy(const Tensor& src, bool requires_grad) {
  Var v = leaf(src.shape, requires_grad);
  if (src.numel()) std::memcpy(v.data(), src.data, sizeof(float) * size_t(src.numel()));
  return v;
}

Var Tape::output(const Shape& s, std::initializer_list<Var> inputs) {
  bool rg = false;
  if (grad_enabled_)
    for (const Var& v : inputs) rg = rg || v.requires_grad();
  nodes_.push_back(Node{arena_.alloc(s), Tensor{}, rg});
  return Var(&nodes_.back());
}

Var Tape::output(const Shape& s, const std::vector<Var>& inputs) {
  bool rg = false;
  if (grad_enabled_)
    for (const Var& v : inputs) rg = rg || v.requires_grad();
  nodes_.push_back(Node{arena_.alloc(s), Tensor{}, rg});
  return Var(&nodes_.back());
}

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
  for (int64_t i = 0; i < g.numel(); ++i) g.data[i] += seed.data[i];
  for (auto it = records_.rbegin(); it != records_.rend(); ++it)
    if (!it->out || it->out->grad.data) it->backward();
}

void Tape::zero_grad() {
  for (Node& n : nodes_)
    if (n.grad.data) std::memset(n.grad.data, 0, sizeof(float) * size_t(n.grad.numel()));
}

void Tape::reset() {
  records_.clear();
  nodes_.clear();
  arena_.reset();
}

}  // namespace fbt
