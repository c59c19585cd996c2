#include "models/model.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

#include "backend/kernel_types.hpp"
#include "models/feedback_transformer.hpp"
#include "models/transformer_xl.hpp"
#include "util/check.hpp"

namespace fbt {

void Memory::store(const float* src, Device src_dev, const Shape& shape, Device d) {
  const size_t n = size_t(shape.numel());
  if (buf_.device() != d || buf_.size() < n) buf_ = DeviceBuffer(d, n);
  copy_bytes(buf_.data(), d, src, src_dev, sizeof(float) * n);
  shape_ = shape;
}

void Memory::assign(const Tensor& t) { store(t.data, t.device, t.shape, t.device); }

void Memory::assign_host(const std::vector<float>& values, const Shape& shape, Device d) {
  check(int64_t(values.size()) == shape.numel(), "Memory: ", values.size(), " values for ", shape);
  store(values.data(), Device::CPU, shape, d);
}

std::vector<float> Memory::values() const {
  std::vector<float> h(rows() ? size_t(shape_.numel()) : 0);
  copy_bytes(h.data(), Device::CPU, buf_.data(), buf_.device(), sizeof(float) * h.size());
  return h;
}

Model::Model(const ModelConfig& cfg) : cfg_(cfg) { cfg_.validate(); }

std::vector<std::vector<float>> Model::span_ratios() const {
  std::vector<std::vector<float>> z;
  if (!cfg_.adapt_span) return z;
  for (int64_t l = 0; l < cfg_.depth; ++l)
    z.push_back(to_host(params_.get("layers." + std::to_string(l) + ".attn.span").value()));
  return z;
}

std::vector<std::vector<float>> Model::spans() const {
  std::vector<std::vector<float>> out = span_ratios();
  for (std::vector<float>& layer : out)
    for (float& r : layer) r *= float(cfg_.mem_len);
  return out;
}

std::vector<double> Model::mean_spans(const std::vector<std::vector<float>>& spans) {
  std::vector<double> out;
  for (const std::vector<float>& layer : spans) {
    double mean = 0;
    for (float x : layer) mean += x / double(layer.size());
    out.push_back(mean);
  }
  return out;
}

int64_t Model::span_reach() const {
  if (!cfg_.adapt_span) return std::numeric_limits<int64_t>::max();
  float z = 0.f;  // the widest span: the mask grows with z, in the kernel's float arithmetic too
  for (const std::vector<float>& layer : span_ratios())
    for (float r : layer) z = std::max(z, r);
  const int64_t M = cfg_.mem_len, R = cfg_.adapt_span_ramp, farthest = M + cfg_.seq_len;  // no key is farther back
  if (!std::isfinite(z)) return farthest;
  auto kept = [&](int64_t d) { return span_ramp(z, int32_t(d), M, R) >= 0.f; };
  // (clamped in double: a span ratio read from a file may be any float)
  int64_t d = int64_t(std::clamp(std::floor(double(z) * double(M)) + double(R) + 2.0, 1.0, double(farthest)));
  while (d > 1 && !kept(d)) --d;
  while (d < farthest && kept(d + 1)) ++d;
  return d;
}

void Model::check_call(int64_t B, int64_t T, const State* state, const CallOptions& o) const {
  const ModelConfig& c = cfg_;
  check(B >= 1 && T >= 1, "forward: tokens must be (B, T) with B, T >= 1, got (", B, ", ", T, ")");
  if (state && state->memory.rows()) {
    const Shape& m = state->memory.shape();
    check(m == memory_shape(B, state->memory.rows()) && state->memory.rows() <= c.mem_len, "forward: memory ", m,
          " is not ", memory_shape(B, 0), " with m rows, m <= mem_len=", c.mem_len);
  }
  check(c.cross_attend == bool(o.context), c.cross_attend ? "forward: cross_attend needs a context"
                                                          : "forward: a context was given but cross_attend is false");
  if (o.context)
    check(o.context.shape().nd == 3 && o.context.shape()[0] == B && o.context.shape()[1] >= 1 &&
              o.context.shape()[2] == c.dim,
          "forward: context ", o.context.shape(), " is not (B=", B, ", Tc >= 1, D=", c.dim, ")");
  if (o.train && (c.attn_dropout > 0.f || c.ff_dropout > 0.f))
    check(o.rng != nullptr, "forward: training dropout needs a generator");
}

std::vector<Var> Model::run_piece(const CallOptions& o, std::function<std::vector<Var>()> piece) {
  if (!o.recompute) return piece();
  Rng* rng = o.rng;
  const Rng start = rng ? *rng : Rng();
  return tape().checkpoint("recompute", [piece = std::move(piece), rng, start](bool again) {
    if (!again || !rng) return piece();
    const Rng resume = *rng;
    *rng = start;
    std::vector<Var> out = piece();
    *rng = resume;
    return out;
  });
}

namespace {
// A state (memory_shape) as [outer][streams][inner]: the stream axis is the third from last.
struct StreamLayout {
  int64_t outer = 1, inner = 1;
};
StreamLayout stream_layout(const Model& m, int64_t rows) {
  const Shape s = m.memory_shape(1, rows);
  StreamLayout l;
  for (int i = 0; i < s.nd - 3; ++i) l.outer *= s[i];
  l.inner = s[s.nd - 2] * s[s.nd - 1];
  return l;
}
}  // namespace

std::vector<float> select_streams(const Model& m, const std::vector<float>& state, int64_t B, int64_t rows,
                                  int64_t first, int64_t count) {
  const StreamLayout l = stream_layout(m, rows);
  check(int64_t(state.size()) == l.outer * B * l.inner && first >= 0 && first + count <= B,
        "select_streams: streams [", first, ", ", first + count, ") of a state of ", B, " streams");
  std::vector<float> out(size_t(l.outer * count * l.inner));
  for (int64_t o = 0; o < l.outer; ++o)
    std::copy_n(state.begin() + (o * B + first) * l.inner, count * l.inner, out.begin() + o * count * l.inner);
  return out;
}

std::vector<float> join_streams(const Model& m, const std::vector<float>& blocks, int64_t nblocks, int64_t count,
                                int64_t rows) {
  const StreamLayout l = stream_layout(m, rows);
  const int64_t block = l.outer * count * l.inner, B = nblocks * count;
  check(int64_t(blocks.size()) == nblocks * block, "join_streams: ", blocks.size(), " values for ", nblocks,
        " states of ", count, " streams");
  std::vector<float> out(blocks.size());
  for (int64_t k = 0; k < nblocks; ++k)
    for (int64_t o = 0; o < l.outer; ++o)
      std::copy_n(blocks.begin() + k * block + o * count * l.inner, count * l.inner,
                  out.begin() + (o * B + k * count) * l.inner);
  return out;
}

int32_t Model::bucket(int64_t d, int64_t num_buckets, int64_t max_distance) {
  const int64_t e = num_buckets / 2;
  if (d < e) return int32_t(d);
  const double v = std::log(double(d) / double(e)) / std::log(double(max_distance) / double(e)) * double(num_buckets - e);
  return int32_t(std::min<int64_t>(num_buckets - 1, e + int64_t(std::floor(v))));
}

void Model::check_init_scheme(const std::string& scheme) {
  if (scheme != "gpt2" && scheme != "torch") throw std::invalid_argument("'" + scheme + "' is not one of gpt2, torch");
}

void Model::init(uint64_t seed, const std::string& scheme) {
  check_init_scheme(scheme);
  const bool torch = scheme == "torch";
  Rng rng(seed);
  const float out_std = 0.02f / std::sqrt(2.0f * float(cfg_.depth));
  for (size_t i = 0; i < params_.size(); ++i) {  // one generator, in registration order
    const ParamRole role = params_.role(i);
    float* x = params_.values().data() + params_.offset(i);  // drawn on the host, then sent
    const int64_t n = params_.at(i).value().numel();
    const Shape& shape = params_.at(i).shape();
    if (role == ParamRole::NormWeight || role == ParamRole::MixWeights) {
      std::fill(x, x + n, 1.f);
    } else if (role == ParamRole::SpanRatio) {
      std::fill(x, x + n, cfg_.adapt_span_init);
    } else if (role == ParamRole::Bias) {
      std::fill(x, x + n, 0.f);
    } else if (torch && role == ParamRole::Embedding) {  // nn.Embedding: N(0, 1)
      for (int64_t k = 0; k < n; ++k) x[k] = rng.normal();
    } else if (torch && role != ParamRole::PositionBias) {  // nn.Linear: U(-1/sqrt(in), 1/sqrt(in)), W:(out, in)
      const float bound = 1.0f / std::sqrt(float(shape[shape.nd - 1]));
      for (int64_t k = 0; k < n; ++k) x[k] = bound * (2.0f * rng.uniform() - 1.0f);
    } else {  // GPT-2's: N(0, 0.02), the residual stream's writers scaled down by depth
      const float std = role == ParamRole::ResidualOut ? out_std : 0.02f;
      for (int64_t k = 0; k < n; ++k) x[k] = std * rng.normal();
    }
  }
  params_.sync_to_device();
}

std::unique_ptr<Model> make_model(const ModelConfig& cfg, bool initialize) {
  if (cfg.type == "transformer_xl") return std::make_unique<TransformerXL>(cfg, initialize);
  return std::make_unique<FeedbackTransformer>(cfg, initialize);
}

}  // namespace fbt
