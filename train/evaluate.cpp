#include "train/evaluate.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

#include "train/progress.hpp"

namespace fbt {

double EvalResult::bpc() const { return loss / std::log(2.0); }
double EvalResult::perplexity() const { return std::exp(loss); }

EvalResult evaluate(FeedbackTransformer& model, const Corpus& corpus, int64_t streams, int64_t bptt,
                    int64_t max_tokens, bool show_progress) {
  NoGradScope ng;
  StreamBatcher batcher(corpus, streams, bptt);
  std::vector<int32_t> in(size_t(streams * bptt)), tg(size_t(streams * bptt));
  State state;
  state.keep_projection = true;  // its keys/values, reused by the next call
  double total = 0;
  int64_t count = 0;
  const int64_t budget = max_tokens > 0 ? std::min(max_tokens, streams * (batcher.stream_length() - 1))
                                        : streams * (batcher.stream_length() - 1);
  const FrozenWeights frozen = model.freeze_for(streams, budget / streams);
  Progress bar("eval", budget);
  while (count < budget) {
    const int64_t n = batcher.next(in.data(), tg.data(), true);
    if (n == 0) break;
    const StepScope scope(model.device());
    CallOptions options;
    options.targets = tg.data();
    const ForwardOutput o = model.forward(in.data(), streams, n, &state, options);
    total += double(to_host(o.loss.value())[0]) * double(streams * n);
    count += streams * n;
    if (show_progress) bar.update(count);
  }
  return {count ? total / double(count) : 0.0, count};
}

}  // namespace fbt
