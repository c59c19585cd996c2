#include "autograd/params.hpp"

#include <algorithm>

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

void ParamStore::zero_grad() { std::fill(grads_.begin(), grads_.end(), 0.0f); }

}  // namespace fbt
