#include "autograd/params.hpp"

#include <algorithm>
#include <stdexcept>

#include "ops/cpu/kernels.hpp"

namespace fbt {

Var ParamStore::add(const std::string& name, const Shape& shape) {
  if (finalized_) throw std::logic_error("ParamStore::add(" + name + ") after finalize()");
  if (index_.count(name)) throw std::logic_error("duplicate parameter " + name);
  index_[name] = names_.size();
  names_.push_back(name);
  nodes_.push_back(Node{Tensor{nullptr, shape, Device::CPU}, Tensor{nullptr, shape, Device::CPU}, true});
  return Var(&nodes_.back());
}

void ParamStore::finalize() {
  size_t total = 0;
  offsets_.clear();
  for (auto& n : nodes_) {
    offsets_.push_back(total);
    total += size_t(n.value.numel());
  }
  values_.assign(total, 0.0f);
  grads_.assign(total, 0.0f);
  for (size_t i = 0; i < nodes_.size(); ++i) {
    nodes_[i].value.data = values_.data() + offsets_[i];
    nodes_[i].grad.data = grads_.data() + offsets_[i];
  }
  finalized_ = true;
}

Var ParamStore::get(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) throw std::out_of_range("no parameter named " + name);
  return at(it->second);
}

void ParamStore::pack_for_steps(Var W) {
  if (W.shape().nd != 2) throw std::logic_error("ParamStore::pack_for_steps: " + W.shape().str() + " is not 2-D");
  if (std::find(packed_nodes_.begin(), packed_nodes_.end(), W.node()) == packed_nodes_.end())
    packed_nodes_.push_back(W.node());
}

void ParamStore::freeze() {
  size_t total = 0;
  for (const Node* n : packed_nodes_) {
    const int64_t Out = n->value.shape[0], In = n->value.shape[1];
    total += size_t(cpu::packed_floats(In, Out) + cpu::packed_floats(Out, In));
  }
  packed_.resize(total);
  float* at = packed_.data();
  for (Node* n : packed_nodes_) {
    const int64_t Out = n->value.shape[0], In = n->value.shape[1];
    cpu::pack_panels(at, n->value.data, In, Out, 1, In);  // W^T: (In, Out)
    n->packed_fwd = at;
    at += cpu::packed_floats(In, Out);
    cpu::pack_panels(at, n->value.data, Out, In, In, 1);  // W: (Out, In)
    n->packed_bwd = at;
    at += cpu::packed_floats(Out, In);
  }
  frozen_ = true;
  ++freeze_count_;
}

void ParamStore::thaw() {
  for (Node* n : packed_nodes_) n->packed_fwd = n->packed_bwd = nullptr;
  frozen_ = false;
}

void ParamStore::zero_grad() { std::fill(grads_.begin(), grads_.end(), 0.0f); }

}  // namespace fbt
