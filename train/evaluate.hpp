// Evaluation over a whole split (or its first tokens), with every stream's memory carried from
// one call to the next exactly as in training.
#pragma once
#include <cstdint>

#include "data/tokens.hpp"
#include "models/model.hpp"

namespace fbt {

struct EvalResult {
  double loss = 0;      // mean nats per predicted token
  int64_t tokens = 0;   // predicted tokens (of labelled data: labelled positions)
  bool labelled = false;
  double accuracy = 0;  // labelled data: the share of positions whose most likely token is the label
  double bpc() const;
  double perplexity() const;
};

// Mean cross-entropy over a split read as `streams` contiguous streams with the memory carried,
// `bptt` tokens per call; max_tokens > 0 stops after about that many predicted tokens.
EvalResult evaluate(Model& model, const Corpus& corpus, int64_t streams, int64_t bptt,
                    int64_t max_tokens = 0, bool show_progress = false);

}  // namespace fbt
