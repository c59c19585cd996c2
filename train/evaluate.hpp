// Evaluation over a whole split (or its first tokens), with every stream's memory carried from
// one call to the next exactly as in training.
#pragma once
#include <cstdint>

#include "backend/comm.hpp"
#include "data/tokenizer.hpp"
#include "data/tokens.hpp"
#include "models/model.hpp"

namespace fbt {

struct EvalResult {
  double loss = 0;      // mean nats per predicted token
  int64_t tokens = 0;   // predicted tokens (of labelled data: labelled positions)
  bool labelled = false;
  double accuracy = 0;  // labelled data: the share of positions whose most likely token is the label
  int64_t bytes = 0;    // with a tokenizer, unlabelled: bytes of text the predicted tokens stand for
  double bpc() const;   // bits per token (per character for bytes)
  double bpb() const;   // bits per byte of text: comparable across tokenizers (0 without bytes)
  double perplexity() const;
};

// Mean cross-entropy over a split read as `streams` contiguous streams with the memory carried,
// `bptt` tokens per call; max_tokens > 0 stops after about that many predicted tokens. With the
// corpus's tokenizer, the bytes its predicted tokens stand for are counted too (EvalResult::bpb).
// With comm, each process evaluates its block of the streams (comm->size() must divide them)
// and every process gets the totals.
EvalResult evaluate(Model& model, const Corpus& corpus, int64_t streams, int64_t bptt,
                    int64_t max_tokens = 0, bool show_progress = false, const Tokenizer* tokenizer = nullptr,
                    Comm* comm = nullptr);

}  // namespace fbt
