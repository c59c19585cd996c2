// The Feedback Transformer, exactly as ../shared/docs/MODEL.md: the time loop over windows, the
// shared memory, its key/value caches and the detachment policy.
//
// Memory without O(T x mem_len) copies: one call keeps the memory vectors of the call in one
// buffer of (m0 + T) rows per stream, and their projected keys/values in a cache of the same
// rows (one cache per distinct projection: one with shared_kv, else one per layer). A window
// projects only its own new vectors and attends to a row range of the cache. The cache has two
// gradient buffers over one storage: readers that may differentiate into a memory vector add
// into one, readers for which the policy makes it a constant add into the other; both train the
// projection, only the first reaches the vector (ops: project_memory).
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "models/model.hpp"
#include "nn/memory.hpp"

namespace fbt {

class FeedbackTransformer : public Model {
 public:
  // initialize: run init(0); false leaves the parameters zero, for weights loaded right after.
  explicit FeedbackTransformer(const ModelConfig& cfg, bool initialize = true);

  ForwardOutput forward(const int32_t* tokens, int64_t B, int64_t T, State* state = nullptr,
                        const CallOptions& options = {}) override;

  // Packs the weights of the time loop's products (ParamStore::freeze) while it lives, when
  // they will serve `steps` time steps over B streams: windows of few enough rows to read the
  // packs, and enough of them (4) to repay packing. The weights must not change meanwhile.
  FrozenWeights freeze_for(int64_t B, int64_t steps) override {
    return FrozenWeights(params_, steps >= 4 * cfg_.seq_len && B * cfg_.seq_len <= linear_packed_max_rows());
  }
  Shape memory_shape(int64_t B, int64_t rows) const override { return Shape{B, rows, cfg_.dim}; }
  // The time loop's weights, packed while the parameters are frozen (ops.hpp).
  const StepWeightPacks& step_packs() const { return *step_packs_; }

 private:
  static constexpr int64_t kRecomputeRows = 128;  // rows of a recomputed group of windows (forward)
  struct Call;  // one forward call's buffers and caches (feedback_transformer.cpp)
  Call open_call(int64_t B, int64_t T, State* state, const CallOptions& o) const;
  nn::Window window(const Call& call, int64_t s) const;
  int64_t first_differentiable_row(const Call& call, int64_t s) const;
  int64_t first_memory_row(const Call& call, int64_t s) const;
  std::pair<Var, Var> run_window(const Call& call, Var h, int64_t s, int64_t split, nn::Window w) const;
  void close_call(Call& call, ForwardOutput& res, State* state) const;

  nn::Embedding token_emb_;
  Var pos_bias_;
  Var layer_weight_;
  std::vector<nn::Block> layers_;
  nn::MemoryProjection projection_;
  nn::LayerNorm out_norm_;
  nn::Linear to_logits_;
  std::vector<int32_t> bucket_of_;               // bucket_of_[d] for d in [1, mem_len + seq_len]
  std::shared_ptr<StepWeightPacks> step_packs_;  // shared with the parameter store's freeze hook
};

}  // namespace fbt
