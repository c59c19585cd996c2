// The Transformer-XL-style baseline, exactly as ../shared/docs/MODEL.md "The baseline": every
// layer attends to the cached inputs of that same layer (per-layer memory, span mem_len, strictly
// past), with the feedback model's blocks, names, position bias, norms and GEGLU. A call runs all
// of its positions in parallel, layer by layer: a few large products per layer, no time loop.
#pragma once
#include <vector>

#include "models/model.hpp"
#include "nn/memory.hpp"

namespace fbt {

class TransformerXL : public Model {
 public:
  // initialize: run init(0); false leaves the parameters zero, for weights loaded right after.
  explicit TransformerXL(const ModelConfig& cfg, bool initialize = true);

  // The state is (L, B, m, D): each layer's inputs at the m most recent past steps, oldest first.
  ForwardOutput forward(const int32_t* tokens, int64_t B, int64_t T, State* state = nullptr,
                        const CallOptions& options = {}) override;
  // No time loop: nothing is packed.
  FrozenWeights freeze_for(int64_t, int64_t) override { return FrozenWeights(params_, false); }
  Shape memory_shape(int64_t B, int64_t rows) const override { return Shape{cfg_.depth, B, rows, cfg_.dim}; }

 private:
  nn::Window window(int64_t B, int64_t T, int64_t m, int64_t span, const CallOptions& o) const;

  nn::Embedding token_emb_;
  Var pos_bias_;
  std::vector<nn::Block> layers_;
  nn::MemoryProjection no_projection_;  // the blocks' window-local keys: unused (no windows)
  nn::LayerNorm out_norm_;
  nn::Linear to_logits_;
};

}  // namespace fbt
