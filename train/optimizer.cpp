#include "train/optimizer.hpp"

#include <algorithm>
#include <cmath>

#include "backend/profile.hpp"
#include "backend/cuda/kernels.hpp"
#include "ops/ops.hpp"

namespace fbt {

bool AdamW::decays(const std::string& name, int ndim) { return ndim >= 2 && name != "pos_bias.weight"; }

AdamW::AdamW(ParamStore& params, AdamWConfig cfg)
    : params_(params), cfg_(cfg), m_(params.numel(), 0.f), v_(params.numel(), 0.f) {
  for (size_t i = 0; i < params.size(); ++i) {
    const int64_t begin = int64_t(params.offset(i));
    ranges_.push_back({begin, begin + params.at(i).value().numel(), decays(params.names()[i], params.at(i).shape().nd)});
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
  std::vector<uint8_t> flags(m_.size() + 3, 0);  // whole floats of bytes
  for (const Range& r : ranges_) std::fill(flags.begin() + r.begin, flags.begin() + r.end, uint8_t(r.decays));
  ddecay_ = DeviceBuffer(d, flags.size() / 4);
  copy_bytes(ddecay_.data(), d, flags.data(), Device::CPU, ddecay_.size() * sizeof(float));
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
  if (device_ != Device::CPU) {
    cuda::adamw_step(params_.value_block(), dm_.data(), dv_.data(), params_.grad_block(),
                     reinterpret_cast<const uint8_t*>(ddecay_.data()), int64_t(params_.numel()), lr, cfg_.beta1,
                     cfg_.beta2, cfg_.eps, cfg_.weight_decay, t_, grad_scale);
    return;
  }
  const double bc1 = 1.0 - std::pow(cfg_.beta1, double(t_)), bc2 = 1.0 - std::pow(cfg_.beta2, double(t_));
  const float b1 = float(cfg_.beta1), b2 = float(cfg_.beta2), eps = float(cfg_.eps);
  const float step_size = float(lr / bc1), inv_sqrt_bc2 = float(1.0 / std::sqrt(bc2));
  const float decay = float(lr * cfg_.weight_decay);
  float* w = params_.values().data();
  const float* g = params_.grads().data();
  float* m = m_.data();
  float* v = v_.data();
  const int64_t n = int64_t(params_.numel());
#pragma omp parallel if (n > (1 << 16))
  for (const Range& r : ranges_) {
    const bool decays = r.decays;
#pragma omp for simd schedule(static) nowait
    for (int64_t i = r.begin; i < r.end; ++i) {
      const float gi = g[i] * grad_scale;
      if (decays) w[i] -= decay * w[i];  // decoupled: p <- p - lr * wd * p
      m[i] = b1 * m[i] + (1.f - b1) * gi;
      v[i] = b2 * v[i] + (1.f - b2) * gi * gi;
      w[i] -= step_size * m[i] / (std::sqrt(v[i]) * inv_sqrt_bc2 + eps);
    }
  }
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
    float* g = params.grad_block();
    const int64_t n = int64_t(params.numel());
    if (params.device() != Device::CPU) {
      cuda::scale_forward(g, g, s, n);
    } else {
#pragma omp parallel for simd if (n > (1 << 16))
      for (int64_t i = 0; i < n; ++i) g[i] *= s;
    }
  }
  return norm;
}

}  // namespace fbt
