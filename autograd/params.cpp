#include "autograd/params.hpp"

#include <algorithm>
#include <limits>
#include <stdexcept>
#include <string>

#include "backend/device.hpp"
#include "backend/profile.hpp"

namespace fbt {

Var ParamStore::add(const std::string& name, const Shape& shape, ParamRole role) {
  if (finalized_) throw std::logic_error("ParamStore::add(" + name + ") after finalize()");
  if (index_.count(name)) throw std::logic_error("duplicate parameter " + name);
  index_[name] = names_.size();
  names_.push_back(name);
  roles_.push_back(role);
  nodes_.push_back(Node{Tensor{nullptr, shape, Device::CPU}, Tensor{nullptr, shape, Device::CPU}, true});
  return Var(&nodes_.back());
}

void ParamStore::finalize() {
  // Values and gradients: 8 bytes a parameter. A count past what memory could hold (or past
  // size_t) is reported like a failed allocation, never wrapped around.
  constexpr size_t kMost = std::numeric_limits<size_t>::max() / 8;
  size_t total = 0;
  offsets_.clear();
  for (auto& n : nodes_) {
    offsets_.push_back(total);
    total = total > kMost - size_t(n.value.numel()) ? kMost : total + size_t(n.value.numel());
  }
  const auto fail = [&] {
    return OutOfMemory(total * 8, Device::CPU, "the model's " + std::to_string(total) + " parameters and their gradients",
                       "choose a smaller model (model.dim, depth, ff_mult, num_tokens)");
  };
  if (total == kMost) throw fail();
  try {
    values_.assign(total, 0.0f);
    grads_.assign(total, 0.0f);
  } catch (const std::bad_alloc&) {
    throw fail();
  }
  point_nodes();
  finalized_ = true;
}

void ParamStore::point_nodes() {
  for (size_t i = 0; i < nodes_.size(); ++i) {
    nodes_[i].value.data = value_block() + offsets_[i];
    nodes_[i].grad.data = grad_block() + offsets_[i];
    nodes_[i].value.device = nodes_[i].grad.device = device_;
  }
}

void ParamStore::to(Device d) {
  if (!finalized_) throw std::logic_error("ParamStore::to() before finalize()");
  if (d == device_) return;
  if (frozen_) throw std::logic_error("ParamStore::to() while frozen");
  require_device(d);
  sync_to_host();
  if (d == Device::CPU) {
    dvalues_ = DeviceBuffer(), dgrads_ = DeviceBuffer();
  } else {
    dvalues_ = DeviceBuffer(d, values_.size()), dgrads_ = DeviceBuffer(d, grads_.size());
    dvalues_.copy_from_host(values_.data(), values_.size());
    dgrads_.copy_from_host(grads_.data(), grads_.size());
  }
  device_ = d;
  point_nodes();
}

void ParamStore::sync_to_host() {
  if (device_ == Device::CPU) return;
  dvalues_.copy_to_host(values_.data());
  dgrads_.copy_to_host(grads_.data());
}

void ParamStore::sync_to_device() {
  if (device_ != Device::CPU) dvalues_.copy_from_host(values_.data(), values_.size());
}

Var ParamStore::get(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) throw std::out_of_range("no parameter named " + name);
  return at(it->second);
}

void ParamStore::freeze() {
  frozen_ = true;
  ++freeze_count_;
  for (const auto& hook : freeze_hooks_) hook(true);
}

void ParamStore::thaw() {
  for (const auto& hook : freeze_hooks_) hook(false);
  frozen_ = false;
}

void ParamStore::zero_grad() {
  const profile::Scope prof("zero gradients", profile::Phase::Optimizer);
  fill_zero(device_, grad_block(), grads_.size());
}

}  // namespace fbt
