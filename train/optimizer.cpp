#include "train/optimizer.hpp"

#include <algorithm>
#include <cmath>

#include "backend/profile.hpp"
#include "backend/cpu/kernels.hpp"
#include "backend/cuda/kernels.hpp"
#include "ops/ops.hpp"

namespace fbt {

AdamW::AdamW(ParamStore& params, AdamWConfig cfg)
    : params_(params), cfg_(cfg), m_(params.numel(), 0.f), v_(params.numel(), 0.f),
      decay_flags_(params.numel() + 3, 0) {
  for (size_t i = 0; i < params.size(); ++i)
    if (weight_decays(params.role(i))) {
      const auto begin = decay_flags_.begin() + std::ptrdiff_t(params.offset(i));
      std::fill(begin, begin + params.at(i).value().numel(), uint8_t(1));
    }
}

void AdamW::follow_params() {
  const Device d = params_.device();
  if (d == device_) return;
  sync_to_host();
  device_ = d;
  if (d == Device::CPU) {
    dm_ = dv_ = ddecay_ = DeviceBuffer();
    return;
  }
  dm_ = DeviceBuffer(d, m_.size()), dv_ = DeviceBuffer(d, v_.size());
  ddecay_ = DeviceBuffer(d, decay_flags_.size() / 4);
  copy_bytes(ddecay_.data(), d, decay_flags_.data(), Device::CPU, ddecay_.size() * sizeof(float));
  sync_to_device();
}

void AdamW::sync_to_host() {
  if (device_ == Device::CPU) return;
  dm_.copy_to_host(m_.data());
  dv_.copy_to_host(v_.data());
}

void AdamW::sync_to_device() {
  if (device_ == Device::CPU) return;
  dm_.copy_from_host(m_.data(), m_.size());
  dv_.copy_from_host(v_.data(), v_.size());
}

void AdamW::step(double lr, float grad_scale) {
  const profile::Scope prof("adamw", profile::Phase::Optimizer);
  follow_params();
  ++t_;
  const bool cpu = device_ == Device::CPU;
  const auto adamw_step = cpu ? cpu::adamw_step : cuda::adamw_step;
  adamw_step(params_.value_block(), cpu ? m_.data() : dm_.data(), cpu ? v_.data() : dv_.data(), params_.grad_block(),
             cpu ? decay_flags_.data() : reinterpret_cast<const uint8_t*>(ddecay_.data()), int64_t(params_.numel()), lr,
             cfg_.beta1, cfg_.beta2, cfg_.eps, cfg_.weight_decay, t_, grad_scale);
}

double learning_rate(int64_t step, int64_t warmup, int64_t total, double lr, double min_lr, bool cosine) {
  if (warmup > 0 && step < warmup) return lr * double(step + 1) / double(warmup);
  if (!cosine) return lr;
  const double span = double(std::max<int64_t>(1, total - warmup));
  const double progress = std::min(1.0, double(step - warmup) / span);
  return min_lr + 0.5 * (lr - min_lr) * (1.0 + std::cos(M_PI * progress));
}

float clip_scale(double norm, double max_norm) {
  return max_norm > 0 && norm > max_norm ? float(max_norm / (norm + 1e-6)) : 1.f;
}

double clip_grad_norm(ParamStore& params, double max_norm) {
  const double norm = global_grad_norm(params);
  if (const float s = clip_scale(norm, max_norm); s != 1.f) {
    scale_grads(params, s);
  }
  return norm;
}

}  // namespace fbt
