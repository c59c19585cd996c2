#include "train/evaluate.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
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
                    int64_t max_tokens, bool show_progress, const Tokenizer* tokenizer, Comm* comm) {
  NoGradScope ng;
  StreamBatcher batcher(corpus, streams, bptt);
  const int64_t ranks = comm ? comm->size() : 1, rank = comm ? comm->rank() : 0;
  if (streams % ranks)
    throw std::invalid_argument("evaluate: " + std::to_string(streams) + " streams do not split among " +
                                std::to_string(ranks) + " processes");
  const int64_t mine = streams / ranks;  // this process's streams: [rank * mine, (rank + 1) * mine)
  std::vector<int32_t> in(size_t(streams * bptt)), tg(size_t(streams * bptt));
  State state;
  state.keep_projection = true;  // its keys/values, reused by the next call
  double total = 0, tokens = 0, right = 0, bytes = 0;
  int64_t read = 0;
  EvalResult r;
  r.labelled = corpus.labelled();
  const int64_t all = streams * batcher.positions(), budget = max_tokens > 0 ? std::min(max_tokens, all) : all;
  const FrozenWeights frozen = model.freeze_for(mine, budget / streams);
  Progress bar("eval", budget);
  show_progress = show_progress && rank == 0;
  while (read < budget) {
    const int64_t n = batcher.next(in.data(), tg.data(), true);
    if (n == 0) break;
    const StepScope scope(model.device());
    const int32_t* x = in.data() + rank * mine * n;
    const std::vector<int32_t> y(tg.begin() + rank * mine * n, tg.begin() + (rank + 1) * mine * n);
    CallOptions options;
    options.targets = y.data();
    const ForwardOutput o = model.forward(x, mine, n, &state, options);
    const int64_t scored = std::count_if(y.begin(), y.end(), [](int32_t t) { return t >= 0; });
    total += double(to_host(o.loss.value())[0]) * double(scored);
    tokens += double(scored);
    if (r.labelled) right += double(correct_predictions(to_host(o.logits.value()), y, mine * n, model.config().num_tokens));
    else if (tokenizer)
      for (int32_t t : y) bytes += double(tokenizer->piece(t).size());
    read += streams * n;
    if (show_progress) bar.update(read);
  }
  double sums[4] = {total, tokens, right, bytes};
  if (comm) comm->sum_ordered(sums, 4);
  r.tokens = int64_t(sums[1]);
  r.bytes = int64_t(sums[3]);
  r.loss = r.tokens ? sums[0] / sums[1] : 0.0;
  r.accuracy = r.tokens ? sums[2] / sums[1] : 0.0;
  return r;
}

}  // namespace fbt
