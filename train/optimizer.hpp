// AdamW (decoupled weight decay, Loshchilov & Hutter) over the contiguous parameter block, the
// learning-rate schedule, and global-norm clipping.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "autograd/params.hpp"

namespace fbt {

struct AdamWConfig {
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.0;
};

class AdamW {
 public:
  AdamW(ParamStore& params, AdamWConfig cfg);
  // One update with learning rate lr; step counts from 1 (bias correction). grad_scale
  // multiplies the gradients as they are read (clipping without a pass of its own; clip_scale).
  void step(double lr, float grad_scale = 1.f);
  int64_t steps_taken() const { return t_; }
  void set_steps_taken(int64_t t) { t_ = t; }
  // The moments on the host. With the parameters on a device they live there during training:
  // sync_to_host() reads them back (checkpoints), sync_to_device() sends m(), v() (resume).
  std::vector<float>& m() { return m_; }
  std::vector<float>& v() { return v_; }
  void sync_to_host();
  void sync_to_device();

 private:
  ParamStore& params_;
  AdamWConfig cfg_;
  std::vector<float> m_, v_;
  // 1 where the element's parameter decays, in whole floats of bytes (the device copy's unit).
  std::vector<uint8_t> decay_flags_;
  int64_t t_ = 0;
  // The moments and a per-element decay flag on the parameters' device (not the CPU's).
  Device device_ = Device::CPU;
  DeviceBuffer dm_, dv_, ddecay_;
  void follow_params();  // moves the moments to where the parameters are
};

// Linear warmup over `warmup` steps to lr, then constant or cosine down to min_lr at `total`.
double learning_rate(int64_t step, int64_t warmup, int64_t total, double lr, double min_lr, bool cosine);

// The factor that brings gradients of global norm `norm` down to max_norm: 1 when they are
// within it or max_norm <= 0.
float clip_scale(double norm, double max_norm);

// Scales gradients so their global norm is at most max_norm (no-op for max_norm <= 0).
// Returns the norm before clipping.
double clip_grad_norm(ParamStore& params, double max_norm);

}  // namespace fbt
