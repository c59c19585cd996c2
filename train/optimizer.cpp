#include "train/optimizer.hpp"

#include <cmath>

#include "ops/ops.hpp"

namespace fbt {

bool AdamW::decays(const std::string& name, int ndim) { return ndim >= 2 && name != "pos_bias.weight"; }

AdamW::AdamW(ParamStore& params, AdamWConfig cfg)
    : params_(params), cfg_(cfg), m_(params.numel(), 0.f), v_(params.numel(), 0.f), decay_(params.numel(), 0) {
  for (size_t i = 0; i < params.size(); ++i) {
    const bool d = decays(params.names()[i], params.at(i).shape().nd);
    std::fill(decay_.begin() + long(params.offset(i)), decay_.begin() + long(params.offset(i)) + params.at(i).value().numel(),
              uint8_t(d));
  }
}

void AdamW::step(double lr) {
  ++t_;
  const double bc1 = 1.0 - std::pow(cfg_.beta1, double(t_)), bc2 = 1.0 - std::pow(cfg_.beta2, double(t_));
  const float b1 = float(cfg_.beta1), b2 = float(cfg_.beta2), eps = float(cfg_.eps);
  const float step_size = float(lr / bc1), inv_sqrt_bc2 = float(1.0 / std::sqrt(bc2));
  const float decay = float(lr * cfg_.weight_decay);
  float* w = params_.values().data();
  const float* g = params_.grads().data();
  const int64_t n = int64_t(params_.numel());
#pragma omp parallel for simd if (n > (1 << 16))
  for (int64_t i = 0; i < n; ++i) {
    if (decay_[size_t(i)]) w[i] -= decay * w[i];  // decoupled: p <- p - lr * wd * p
    m_[size_t(i)] = b1 * m_[size_t(i)] + (1.f - b1) * g[i];
    v_[size_t(i)] = b2 * v_[size_t(i)] + (1.f - b2) * g[i] * g[i];
    w[i] -= step_size * m_[size_t(i)] / (std::sqrt(v_[size_t(i)]) * inv_sqrt_bc2 + eps);
  }
}

double learning_rate(int64_t step, int64_t warmup, int64_t total, double lr, double min_lr, bool cosine) {
  if (warmup > 0 && step < warmup) return lr * double(step + 1) / double(warmup);
  if (!cosine) return lr;
  const double span = double(std::max<int64_t>(1, total - warmup));
  const double progress = std::min(1.0, double(step - warmup) / span);
  return min_lr + 0.5 * (lr - min_lr) * (1.0 + std::cos(M_PI * progress));
}

double clip_grad_norm(ParamStore& params, double max_norm) {
  const double norm = global_grad_norm(params);
  if (max_norm > 0 && norm > max_norm) {
    const float s = float(max_norm / (norm + 1e-6));
    float* g = params.grads().data();
    const int64_t n = int64_t(params.grads().size());
#pragma omp parallel for simd if (n > (1 << 16))
    for (int64_t i = 0; i < n; ++i) g[i] *= s;
  }
  return norm;
}

}  // namespace fbt
