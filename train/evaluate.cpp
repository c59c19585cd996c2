#include "train/evaluate.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

#include "train/progress.hpp"

namespace fbt {

double EvalResult::bpc() const { return loss / std::log(2.0); }
double EvalResult::perplexity() const { return std::exp(loss); }
double EvalResult::bpb() const { return bytes ? loss * double(tokens) / std::log(2.0) / double(bytes) : 0.0; }

namespace {

// Positions of (B*T, V) logits whose argmax is their target, among those with one (target >= 0).
int64_t correct_predictions(const std::vector<float>& logits, const std::vector<int32_t>& targets, int64_t N, int64_t V) {
  int64_t right = 0;
  for (int64_t r = 0; r < N; ++r) {
    if (targets[size_t(r)] < 0) continue;
    const float* row = logits.data() + r * V;
    right += int64_t(std::max_element(row, row + V) - row) == targets[size_t(r)];
  }
  return right;
}

}  // namespace

EvalResult evaluate(Model& model, const Corpus& corpus, int64_t streams, int64_t bptt,
                    int64_t max_tokens, bool show_progress, const Tokenizer* tokenizer) {
  NoGradScope ng;
  StreamBatcher batcher(corpus, streams, bptt);
  std::vector<int32_t> in(size_t(streams * bptt)), tg(size_t(streams * bptt));
  State state;
  state.keep_projection = true;  // its keys/values, reused by the next call
  double total = 0;
  int64_t read = 0, right = 0;
  EvalResult r;
  r.labelled = corpus.labelled();
  const int64_t all = streams * batcher.positions(), budget = max_tokens > 0 ? std::min(max_tokens, all) : all;
  const FrozenWeights frozen = model.freeze_for(streams, budget / streams);
  Progress bar("eval", budget);
  while (read < budget) {
    const int64_t n = batcher.next(in.data(), tg.data(), true);
    if (n == 0) break;
    const StepScope scope(model.device());
    CallOptions options;
    options.targets = tg.data();
    const ForwardOutput o = model.forward(in.data(), streams, n, &state, options);
    const int64_t scored = std::count_if(tg.begin(), tg.begin() + streams * n, [](int32_t t) { return t >= 0; });
    total += double(to_host(o.loss.value())[0]) * double(scored);
    r.tokens += scored;
    if (r.labelled) right += correct_predictions(to_host(o.logits.value()), tg, streams * n, model.config().num_tokens);
    else if (tokenizer)
      for (int64_t i = 0; i < streams * n; ++i) r.bytes += int64_t(tokenizer->piece(tg[size_t(i)]).size());
    read += streams * n;
    if (show_progress) bar.update(read);
  }
  r.loss = r.tokens ? total / double(r.tokens) : 0.0;
  r.accuracy = r.tokens ? double(right) / double(r.tokens) : 0.0;
  return r;
}

}  // namespace fbt
