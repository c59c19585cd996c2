#include "train/sample.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "backend/rng.hpp"

namespace fbt {

namespace {
int32_t draw(const float* logits, int64_t V, const SampleOptions& opt, Rng& rng) {
  if (opt.temperature <= 0.f) return int32_t(std::max_element(logits, logits + V) - logits);
  std::vector<std::pair<float, int32_t>> cand;
  for (int64_t v = 0; v < V; ++v) cand.push_back({logits[v] / opt.temperature, int32_t(v)});
  if (opt.top_k > 0 && opt.top_k < V) {
    std::partial_sort(cand.begin(), cand.begin() + opt.top_k, cand.end(),
                      [](auto& a, auto& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); });
    cand.resize(size_t(opt.top_k));
  }
  float mx = -INFINITY;
  for (auto& c : cand) mx = std::max(mx, c.first);
  double sum = 0;
  for (auto& c : cand) sum += std::exp(double(c.first - mx));
  double u = double(rng.uniform()) * sum;
  for (auto& c : cand) {
    u -= std::exp(double(c.first - mx));
    if (u <= 0) return c.second;
  }
  return cand.back().second;
}
}  // namespace

std::vector<int32_t> generate(Model& model, const std::vector<int32_t>& prompt, const SampleOptions& opt,
                              const std::function<void(int32_t)>& on_token) {
  const ModelConfig& c = model.config();
  NoGradScope ng;
  const FrozenWeights frozen = model.freeze_for(1, opt.tokens);
  Rng rng(opt.seed);
  State state;                   // (1, m, D)
  state.keep_projection = true;  // its keys/values: each token projects only its own memory vector
  std::vector<int32_t> out;
  if (prompt.empty()) throw std::invalid_argument("generate: the prompt must hold at least one token");
  std::vector<int32_t> feed = prompt;
  for (int64_t i = 0; i < opt.tokens; ++i) {
    const StepScope scope(model.device());
    const ForwardOutput o = model.forward(feed.data(), 1, int64_t(feed.size()), &state);
    std::vector<float> last(size_t(c.num_tokens));  // the last position's logits
    copy_bytes(last.data(), Device::CPU, o.logits.data() + (int64_t(feed.size()) - 1) * c.num_tokens,
               o.logits.value().device, sizeof(float) * last.size());
    const int32_t tok = draw(last.data(), opt.vocab > 0 ? std::min(opt.vocab, c.num_tokens) : c.num_tokens, opt, rng);
    out.push_back(tok);
    if (on_token) on_token(tok);
    feed.assign(1, tok);
  }
  return out;
}

}  // namespace fbt
