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

void ParamStore::read_transposed(Var W) {
  if (W.shape().nd != 2) throw std::logic_error("ParamStore::read_transposed: " + W.shape().str() + " is not 2-D");
  if (std::find(transposed_nodes_.begin(), transposed_nodes_.end(), W.node()) == transposed_nodes_.end())
    transposed_nodes_.push_back(W.node());
}

void ParamStore::freeze() {
  size_t total = 0;
  for (const Node* n : transposed_nodes_) total += size_t(n->value.numel());
  transposed_.resize(total);
  float* at = transposed_.data();
  for (Node* n : transposed_nodes_) {
    cpu::transpose(at, n->value.data, n->value.shape[0], n->value.shape[1]);
    n->value_t = at;
    at += n->value.numel();
  }
  frozen_ = true;
}

void ParamStore::thaw() {
  for (Node* n : transposed_nodes_) n->value_t = nullptr;
  frozen_ = false;
}

void ParamStore::zero_grad() { std::fill(grads_.begin(), grads_.end(), 0.0f); }

}  // namespace fbt
