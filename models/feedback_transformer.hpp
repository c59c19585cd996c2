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
#include <vector>

#include "autograd/params.hpp"
#include "backend/rng.hpp"
#include "models/config.hpp"
#include "models/detach_policy.hpp"
#include "nn/memory.hpp"

namespace fbt {

// The memory state's keys and values as each key/value cache projects them (one (B, m, 2I) block
// per cache: one with shared_kv, else one per layer), kept by a caller between calls while the
// weights are frozen, so a call does not project the carried memory again (sampling,
// evaluation). Valid only within the freeze that made it (ParamStore::freeze_id).
struct ProjectedMemory {
  std::vector<DeviceBuffer> kv;  // on the model's device
  int64_t B = 0, rows = 0;
  uint64_t freeze_id = 0;  // 0: not reusable
};

// A memory state (B, m, D) kept across calls, where the model computes: ForwardOutput::memory
// lives in the tape's arena and is gone at the next tape().reset(); this owns a copy (on the
// same device). Between calls the state is always a constant (MODEL.md): gradients never flow
// into a state a call received, so carrying it is the same as carrying it detached.
class Memory {
 public:
  Memory() = default;
  explicit Memory(const Tensor& t) { assign(t); }
  void assign(const Tensor& t);  // copies t (either device), reusing the storage when it fits
  void assign_host(const std::vector<float>& values, const Shape& shape, Device d);
  void clear() { shape_ = Shape{}; }
  // For FeedbackTransformer::forward's memory argument (null while empty).
  const Tensor* tensor() {
    view_ = Tensor{buf_.data(), shape_, buf_.device()};
    return rows() ? &view_ : nullptr;
  }
  const Shape& shape() const { return shape_; }
  int64_t rows() const { return shape_.nd == 3 ? shape_[1] : 0; }
  std::vector<float> values() const;  // on the host

 private:
  void store(const float* src, Device src_dev, const Shape& shape, Device d);
  DeviceBuffer buf_;
  Shape shape_;
  Tensor view_;
};

// What one call carries into the next (MODEL.md's memory state): the memory vectors and,
// when keep_projection is set, their projected keys/values, which the next call reuses instead of
// projecting the vectors again while the weights stay frozen (sampling, evaluation).
struct State {
  Memory memory;               // (B, m, D)
  ProjectedMemory projection;  // valid within the freeze that made it
  bool keep_projection = false;

  State() = default;
  explicit State(const Tensor& memory_vectors) : memory(memory_vectors) {}
  void clear() { memory.clear(), projection = ProjectedMemory{}; }
};

// Everything of a call besides its tokens and state.
struct CallOptions {
  Var context;                       // (B,Tc,D): needed exactly when cross_attend
  const int32_t* targets = nullptr;  // (B,T): then ForwardOutput::loss
  DetachPolicy policy{};             // which memory vectors the backward differentiates through
  bool train = false;                // dropout on (needs rng)
  Rng* rng = nullptr;
};

struct ForwardOutput {
  Var logits;     // (B,T,V)
  Var loss;       // 0-d mean cross-entropy (only when targets were given)
  Tensor memory;  // (B,m',D) state after the call, m' = min(mem_len, m + T); arena storage
  // The memory vectors written by the call, one node per window, (B,n,D) each, in step order:
  // their gradients are what the research tools (research/research.hpp) measure.
  std::vector<Var> written;
  std::vector<int64_t> written_start;  // first call step of each window
};

class FeedbackTransformer {
 public:
  // initialize: run init(0); false leaves the parameters zero, for weights loaded right after
  // (drawing tens of millions of normals only to overwrite them costs a second at start-up).
  explicit FeedbackTransformer(const ModelConfig& cfg, bool initialize = true);

  const ModelConfig& config() const { return cfg_; }
  ParamStore& params() { return params_; }
  const ParamStore& params() const { return params_; }

  // Where the model computes: its parameters move to d (the one place a program chooses the
  // device; train.device in a config). A call runs its step on d (StepScope, autograd/tape.hpp);
  // calls take host or device tensors alike, results live on d.
  void to(Device d);
  Device device() const { return params_.device(); }

  // Initialization for training from scratch (docs/ARCHITECTURE.md): normal(0, 0.02) weights,
  // output projections of residual branches scaled by 1/sqrt(2L), zero biases, unit norms,
  // layer_weight ones.
  void init(uint64_t seed);

  // tokens:(B,T) ids. state: the memory carried in (null or empty: none), replaced by the call's
  // memory when given. Records on tape() when recording.
  ForwardOutput forward(const int32_t* tokens, int64_t B, int64_t T, State* state = nullptr,
                        const CallOptions& options = {});

  // Packs the weights of the time loop's products (ParamStore::freeze) while it lives, when
  // they will serve `steps` time steps over B streams: windows of few enough rows to read the
  // packs, and enough of them (4) to repay packing. The weights must not change meanwhile.
  FrozenWeights freeze_for(int64_t B, int64_t steps) {
    return FrozenWeights(params_, steps >= 4 * cfg_.seq_len && B * cfg_.seq_len <= linear_packed_max_rows());
  }

  // T5 causal bucket of a distance d >= 1 (MODEL.md).
  static int32_t bucket(int64_t d, int64_t num_buckets, int64_t max_distance);

 private:
  struct Call;  // one forward call's buffers and caches (feedback_transformer.cpp)
  void check_call(int64_t B, int64_t T, const State* state, const CallOptions& o) const;
  Call open_call(int64_t B, int64_t T, State* state, const CallOptions& o) const;
  nn::Window window(const Call& call, int64_t s) const;
  Var run_window(Call& call, Var h, int64_t s, nn::Window& w, ForwardOutput& res) const;
  void close_call(Call& call, ForwardOutput& res, State* state) const;

  ModelConfig cfg_;
  ParamStore params_;
  nn::Embedding token_emb_;
  Var pos_bias_;
  Var layer_weight_;
  std::vector<nn::Block> layers_;
  nn::MemoryProjection projection_;
  nn::LayerNorm out_norm_;
  nn::Linear to_logits_;
  std::vector<int32_t> bucket_of_;  // bucket_of_[d] for d in [1, mem_len + seq_len]
};

}  // namespace fbt
