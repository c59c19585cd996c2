#include "train/loop.hpp"

#include <fmt/core.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

namespace fbt {

TrainLoop::TrainLoop(Model& model, const LoopConfig& cfg)
    : model_(model), cfg_(cfg), opt_(model.params(), cfg.adam), rng_(cfg.seed ^ 0x5eedd50fULL) {}

void TrainLoop::set_memory(std::vector<float> data, int64_t B, int64_t rows) {
  const Shape shape = model_.memory_shape(B, rows);
  if (int64_t(data.size()) != shape.numel())
    throw std::invalid_argument("TrainLoop::set_memory: " + std::to_string(data.size()) + " values for a state " +
                                shape.str());
  state_.memory.assign_host(data, shape, model_.device());
  batch_ = B;
}

StepStats TrainLoop::step(const int32_t* inputs, const int32_t* targets, int64_t B, int64_t T) {
  if (state_.memory.rows() > 0 && B != batch_)
    throw std::invalid_argument("TrainLoop::step: batch size changed from " + std::to_string(batch_) + " to " +
                                std::to_string(B) + " with memory carried; call reset_memory() first");
  const int64_t step = steps_;
  const StepScope scope(model_.device());
  model_.params().zero_grad();
  ForwardOutput o;
  {
    const FrozenWeights frozen = model_.freeze_for(B, T);  // for forward and backward, until the optimizer
    o = model_.forward(inputs, B, T, &state_, {Var(), targets, cfg_.detach, /*train=*/true, &rng_});
    tape().backward(o.loss);
  }
  StepStats s;
  s.loss = to_host(o.loss.value())[0];
  s.grad_norm = global_grad_norm(model_.params());  // logged before clipping
  s.lr = learning_rate(step, cfg_.warmup, cfg_.total_steps, cfg_.lr, cfg_.min_lr, cfg_.cosine && cfg_.total_steps > 0);
  batch_ = B;
  ++steps_;
  if (std::isfinite(s.loss) && std::isfinite(s.grad_norm)) {
    opt_.step(s.lr, clip_scale(s.grad_norm, cfg_.clip));  // clipping applied as AdamW reads the gradients
    return s;
  }
  s.skipped = true;
  s.fault = fmt::format("loss {}, gradient norm {}", s.loss, s.grad_norm);
  if (const std::string name = first_nonfinite_gradient(model_.params()); !name.empty())
    s.fault += " (first non-finite gradient: " + name + ")";
  const std::vector<float> memory = state_.memory.values();
  if (!std::all_of(memory.begin(), memory.end(), [](float v) { return std::isfinite(v); })) reset_memory();
  return s;
}

std::string first_nonfinite_gradient(ParamStore& params) {
  params.sync_to_host();
  const std::vector<float>& g = params.grads();
  for (size_t i = 0; i < params.size(); ++i) {
    const size_t end = i + 1 < params.size() ? params.offset(i + 1) : g.size();
    for (size_t k = params.offset(i); k < end; ++k)
      if (!std::isfinite(g[k])) return params.names()[i];
  }
  return "";
}

}  // namespace fbt
