#include "train/loop.hpp"

#include <fmt/core.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "backend/threads.hpp"
#include "ops/ops.hpp"

namespace fbt {

TrainLoop::TrainLoop(Model& model, const LoopConfig& cfg)
    : model_(model), cfg_(cfg), opt_(model.params(), cfg.adam), rng_(cfg.seed ^ 0x5eedd50fULL),
      states_(size_t(std::max<int64_t>(1, cfg.grad_accum))) {
  if (cfg_.grad_accum < 1) throw std::invalid_argument("TrainLoop: grad_accum must be >= 1");
}

void TrainLoop::reset_memory() {
  for (State& s : states_) s.clear();
  batch_ = 0;
}

std::vector<float> TrainLoop::memory() const {
  if (memory_rows() == 0) return {};
  const int64_t K = int64_t(states_.size());
  std::vector<float> blocks;
  for (const State& s : states_) {
    const std::vector<float> v = s.memory.values();
    blocks.insert(blocks.end(), v.begin(), v.end());
  }
  return join_streams(model_, blocks, K, batch_ / K, memory_rows());
}

void TrainLoop::set_memory(const std::vector<float>& data, int64_t B, int64_t rows) {
  const int64_t K = int64_t(states_.size());
  const Shape shape = model_.memory_shape(B, rows);
  if (int64_t(data.size()) != shape.numel())
    throw std::invalid_argument("TrainLoop::set_memory: " + std::to_string(data.size()) + " values for a state " +
                                shape.str());
  if (B % K) throw std::invalid_argument("TrainLoop::set_memory: " + std::to_string(B) + " rows for " + std::to_string(K) + " micro-batches");
  for (int64_t k = 0; k < K; ++k)
    states_[size_t(k)].memory.assign_host(select_streams(model_, data, B, rows, k * (B / K), B / K),
                                          model_.memory_shape(B / K, rows), model_.device());
  batch_ = B;
}

namespace {

// Micro-batch j's dropout stream: the step's generator for j = 0 (so one micro-batch draws what
// it always drew), a seed of its own for the others; all advance alike (same shapes).
Rng micro_batch_rng(const Rng& step_rng, uint64_t j) {
  Rng r = step_rng;
  if (j) r.seed = Rng::hash(step_rng.seed, j);
  return r;
}

}  // namespace

StepStats TrainLoop::step(const int32_t* inputs, const int32_t* targets, int64_t B, int64_t T) {
  const int64_t K = int64_t(states_.size());
  if (memory_rows() > 0 && B != batch_)
    throw std::invalid_argument("TrainLoop::step: batch size changed from " + std::to_string(batch_) + " to " +
                                std::to_string(B) + " with memory carried; call reset_memory() first");
  if (B % K)
    throw std::invalid_argument("TrainLoop::step: " + std::to_string(B) + " rows do not split into grad_accum " +
                                std::to_string(K) + " micro-batches");
  threads::share_cores();
  const int64_t rows = B / K;
  Comm* comm = cfg_.comm;
  ParamStore& params = model_.params();
  // Each micro-batch's loss is a mean over its own targets; the step's is over all of them.
  std::vector<double> count(static_cast<size_t>(K));
  double total = 0;
  for (int64_t k = 0; k < K; ++k) {
    count[size_t(k)] = double(std::count_if(targets + k * rows * T, targets + (k + 1) * rows * T,
                                            [](int32_t t) { return t >= 0; }));
    total += count[size_t(k)];
  }
  if (comm) comm->sum_ordered(&total, 1);
  double loss_sum = micro_batch_gradients(inputs, targets, rows, T, count, total);
  if (comm) {
    comm->sum_ordered(params.grad_block(), params.numel(), params.device());
    comm->sum_ordered(&loss_sum, 1);
  }
  StepStats s;
  s.loss = total > 0 ? loss_sum / total : 0.0;
  s.span_loss = add_span_loss();  // once, on the summed gradient: every process alike
  s.grad_norm = global_grad_norm(params);  // logged before clipping
  s.lr = learning_rate(steps_, cfg_.warmup, cfg_.total_steps, cfg_.lr, cfg_.min_lr, cfg_.cosine && cfg_.total_steps > 0);
  batch_ = B;
  ++steps_;
  if (std::isfinite(s.loss) && std::isfinite(s.grad_norm)) {
    opt_.step(s.lr, clip_scale(s.grad_norm, cfg_.clip));
    clamp_spans();
  } else {
    skip_update(s);  // clipping above is applied as AdamW reads the gradients
  }
  return s;
}

// adapt_span_loss * mem_len * sum_l mean_h z_{l,h}: each z's gradient is adapt_span_loss * mem_len / H.
// A few floats a layer, read and written through the host wherever the model is.
double TrainLoop::add_span_loss() {
  ParamStore& params = model_.params();
  const Device device = params.device();
  const double scale = cfg_.adapt_span_loss * double(model_.config().mem_len);
  double term = 0;
  for (size_t i = 0; i < params.size(); ++i) {
    if (params.role(i) != ParamRole::SpanRatio) continue;
    Var z = params.at(i);
    const std::vector<float> ratios = to_host(z.value());
    const int64_t H = int64_t(ratios.size());
    double sum = 0;
    for (float r : ratios) sum += r;
    term += scale * sum / double(H);
    if (scale == 0) continue;
    std::vector<float> g(ratios.size());
    copy_bytes(g.data(), Device::CPU, z.grad().data, device, sizeof(float) * g.size());
    for (float& x : g) x += float(scale / double(H));
    copy_bytes(z.grad().data, device, g.data(), Device::CPU, sizeof(float) * g.size());
  }
  return term;
}

void TrainLoop::clamp_spans() {
  ParamStore& params = model_.params();
  for (size_t i = 0; i < params.size(); ++i) {
    if (params.role(i) != ParamRole::SpanRatio) continue;
    Var z = params.at(i);
    std::vector<float> ratios = to_host(z.value());
    for (float& r : ratios) r = std::clamp(r, 0.f, 1.f);
    copy_bytes(z.data(), params.device(), ratios.data(), Device::CPU, sizeof(float) * ratios.size());
  }
}

double TrainLoop::micro_batch_gradients(const int32_t* inputs, const int32_t* targets, int64_t rows, int64_t T,
                                        const std::vector<double>& count, double total) {
  const int64_t K = int64_t(states_.size());
  ParamStore& params = model_.params();
  const Device device = params.device();
  const int64_t P = int64_t(params.numel());
  const bool alone = K == 1 && (!cfg_.comm || cfg_.comm->size() == 1);
  if (K > 1 && accumulated_.size() != size_t(P)) accumulated_ = DeviceBuffer(device, size_t(P));
  const uint64_t first_micro_batch = uint64_t(cfg_.comm ? cfg_.comm->rank() : 0) * uint64_t(K);
  double loss_sum = 0;  // sum over this process's micro-batches of loss x targets, in order
  Rng next_rng = rng_;
  for (int64_t k = 0; k < K; ++k) {
    const StepScope scope(device);
    params.zero_grad();
    Rng rng = micro_batch_rng(rng_, first_micro_batch + uint64_t(k));
    ForwardOutput o;
    {
      const FrozenWeights frozen = model_.freeze_for(rows, T);  // for forward and backward, until the optimizer
      o = model_.forward(inputs + k * rows * T, rows, T, &states_[size_t(k)],
                         {Var(), targets + k * rows * T, cfg_.detach, /*train=*/true, &rng, cfg_.recompute});
      tape().backward(o.loss);
    }
    loss_sum += double(to_host(o.loss.value())[0]) * count[size_t(k)];
    next_rng.counter = rng.counter;
    if (alone) break;
    scale_grads(params, total > 0 ? float(count[size_t(k)] / total) : 0.f);  // this micro-batch's share
    if (K == 1) break;
    float* acc = accumulated_.data();
    if (k == 0) copy_bytes(acc, device, params.grad_block(), device, size_t(P) * sizeof(float));
    else add_grads_to(acc, params);
  }
  if (K > 1) copy_bytes(params.grad_block(), device, accumulated_.data(), device, size_t(P) * sizeof(float));
  rng_ = next_rng;
  return loss_sum;
}

void TrainLoop::skip_update(StepStats& s) {
  s.skipped = true;
  s.fault = fmt::format("loss {}, gradient norm {}", s.loss, s.grad_norm);
  if (const std::string name = first_nonfinite_gradient(model_.params()); !name.empty())
    s.fault += " (first non-finite gradient: " + name + ")";
  for (const State& st : states_) {
    const std::vector<float> memory = st.memory.values();
    if (!std::all_of(memory.begin(), memory.end(), [](float v) { return std::isfinite(v); })) {
      reset_memory();
      break;
    }
  }
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
