// Parameters by name, their values and gradients each in one contiguous block (one memset to
// zero, one loop for the optimizer, one write for a checkpoint). Order of registration is the
// order in the blocks.
#pragma once
#include <deque>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "backend/device.hpp"
#include "autograd/tape.hpp"

namespace fbt {

// What a parameter is, said where it is registered: it decides its initial values (Model::init)
// and whether AdamW decays it (the matrices and the token embedding do; biases, norm weights,
// the layer-mix weights and the position-bias table do not).
enum class ParamRole {
  Matrix,        // a projection's weight (out, in)
  ResidualOut,   // a projection's weight that writes into the residual stream (init scaled by depth)
  Embedding,     // the token embedding (V, D)
  PositionBias,  // the relative-position bias table
  Bias,          // a projection's or a norm's bias: zeros
  NormWeight,    // a layer norm's weight: ones
  MixWeights,    // the memory's layer-mix logits: ones
  SpanRatio,     // a head's adaptive-span ratio z: adapt_span_init, kept in [0, 1] (TrainLoop)
};
inline bool weight_decays(ParamRole r) {
  return r == ParamRole::Matrix || r == ParamRole::ResidualOut || r == ParamRole::Embedding;
}

class ParamStore {
 public:
  // Register before finalize(); returns a handle whose storage appears at finalize().
  Var add(const std::string& name, const Shape& shape, ParamRole role);
  ParamRole role(size_t i) const { return roles_[i]; }
  void finalize();  // allocates the blocks (values zero)

  Var get(const std::string& name) const;
  bool has(const std::string& name) const { return index_.count(name) != 0; }
  const std::vector<std::string>& names() const { return names_; }
  Var at(size_t i) const { return Var(const_cast<Node*>(&nodes_[i])); }
  size_t size() const { return names_.size(); }

  // The blocks on the host. On the CPU they are the parameters' storage; on a device they are
  // a copy, read back by sync_to_host() and sent by sync_to_device() (checkpoints, loading).
  std::vector<float>& values() { return values_; }
  std::vector<float>& grads() { return grads_; }
  const std::vector<float>& values() const { return values_; }
  const std::vector<float>& grads() const { return grads_; }
  size_t offset(size_t i) const { return offsets_[i]; }
  size_t numel() const { return values_.size(); }

  // The blocks where the parameters live now (the optimizer's and the grad norm's view).
  float* value_block() const { return device_ == Device::CPU ? const_cast<float*>(values_.data()) : dvalues_.data(); }
  float* grad_block() const { return device_ == Device::CPU ? const_cast<float*>(grads_.data()) : dgrads_.data(); }
  Device device() const { return device_; }
  // Moves values and gradients to d; every handle stays valid and points at the new storage.
  void to(Device d);
  void sync_to_host();    // values and gradients -> values(), grads()  (no-op on the CPU)
  void sync_to_device();  // values() -> the device                     (no-op on the CPU)

  void zero_grad();

  // While frozen the values do not change (the scope below), so work derived from them can be
  // kept: each hook runs with true at freeze() and with false at thaw() (ops: the linear layers'
  // packed step weights, StepWeightPacks).
  void on_freeze(std::function<void(bool frozen)> hook) { freeze_hooks_.push_back(std::move(hook)); }
  bool frozen() const { return frozen_; }
  // Which freeze the store is in: a new number for each freeze(), 0 when not frozen. Values
  // computed from the weights can be reused while this stays the same.
  uint64_t freeze_id() const { return frozen_ ? freeze_count_ : 0; }
  void freeze();
  void thaw();

 private:
  std::deque<Node> nodes_;
  std::vector<std::string> names_;
  std::vector<ParamRole> roles_;
  std::vector<size_t> offsets_;
  std::map<std::string, size_t> index_;
  std::vector<float> values_, grads_;
  Device device_ = Device::CPU;
  DeviceBuffer dvalues_, dgrads_;  // the storage while on a device
  void point_nodes();
  bool finalized_ = false;
  std::vector<std::function<void(bool)>> freeze_hooks_;
  bool frozen_ = false;
  uint64_t freeze_count_ = 0;
};

// Freezes the store for its lifetime (a forward over many steps, an evaluation, sampling);
// inactive, or inside an outer scope, it does nothing.
class FrozenWeights {
 public:
  explicit FrozenWeights(ParamStore& ps, bool active = true) : ps_(active && !ps.frozen() ? &ps : nullptr) {
    if (ps_) ps_->freeze();
  }
  ~FrozenWeights() {
    if (ps_) ps_->thaw();
  }
  FrozenWeights(const FrozenWeights&) = delete;
  FrozenWeights& operator=(const FrozenWeights&) = delete;

 private:
  ParamStore* ps_;
};

}  // namespace fbt
