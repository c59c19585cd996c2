// The inputs of one model call, as `fbt forward` and `fbt grads` read them from a safetensors
// file: `inputs` and `targets` [B, T] (I32 or I64), optional `memory` F32 [B, m, D] (the state
// carried in; the baseline's is [L, B, m, D]) and `context` F32 [B, Tc, D] (cross_attend).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "models/config.hpp"
#include "models/model.hpp"

namespace fbt {

// One call's inputs: tokens and targets (B,T), optional carried memory (Model::memory_shape) and
// context (B,Tc,D).
struct CallBatch {
  int64_t B = 0, T = 0;
  std::vector<int32_t> tokens, targets;
  std::vector<float> memory;  // empty: no state
  int64_t memory_rows = 0;
  std::vector<float> context;
  int64_t context_rows = 0;
};

// Reads and checks a batch file against a model config: shapes, ranks, token ids in range and
// no unknown tensors; errors name the file and the tensor.
CallBatch load_call_batch(const std::string& path, const ModelConfig& cfg);

// The model on one batch in the current step (recording when the tape records): its memory as
// the state carried in, its context on the tape, its targets when with_targets; dropout on when
// a generator is given.
ForwardOutput forward_batch(Model& model, const CallBatch& b, const DetachPolicy& policy,
                            bool with_targets = true, Rng* dropout = nullptr);

}  // namespace fbt
