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
#include "nn/layers.hpp"

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

  // Where the model computes: its parameters and this thread's tape move to d (the one place a
  // program chooses the device; train.device in a config). Calls take and return host or device
  // tensors alike; results live on d.
  void to(Device d);
  Device device() const { return params_.device(); }

  // Initialization for training from scratch (docs/ARCHITECTURE.md): normal(0, 0.02) weights,
  // output projections of residual branches scaled by 1/sqrt(2L), zero biases, unit norms,
  // layer_weight ones.
  void init(uint64_t seed);

  // tokens:(B,T) ids.  memory:(B,m,D) or null (m = 0).  context:(B,Tc,D) when cross_attend.
  // targets:(B,T) or null.  train: dropout on (needs rng).  Records on tape() when recording.
  // projected: in, the projection of `memory` from the previous call, used when it belongs to
  // the current freeze (else the memory is projected again); out, that of the returned memory.
  ForwardOutput forward(const int32_t* tokens, int64_t B, int64_t T, const Tensor* memory = nullptr,
                        Var context = Var(), const int32_t* targets = nullptr,
                        const DetachPolicy& policy = DetachPolicy{}, bool train = false, Rng* rng = nullptr,
                        ProjectedMemory* projected = nullptr);

  // Packs the weights of the time loop's products (ParamStore::freeze) while it lives, when
  // they will serve `steps` time steps over B streams: windows of few enough rows to read the
  // packs, and enough of them (4) to repay packing. The weights must not change meanwhile.
  FrozenWeights freeze_for(int64_t B, int64_t steps) {
    return FrozenWeights(params_, steps >= 4 * cfg_.seq_len && B * cfg_.seq_len <= linear_packed_max_rows());
  }

  // T5 causal bucket of a distance d >= 1 (MODEL.md).
  static int32_t bucket(int64_t d, int64_t num_buckets, int64_t max_distance);

 private:
  struct Layer {
    nn::LayerNorm attn_norm;
    nn::Linear to_q, to_kv, to_out;  // to_kv only without shared_kv
    nn::CrossAttention cross;        // only with cross_attend
    nn::FeedForward ff;
  };
  ModelConfig cfg_;
  ParamStore params_;
  nn::Embedding token_emb_;
  Var pos_bias_;
  nn::LayerNorm mem_norm_;
  Var shared_kv_;
  Var layer_weight_;
  std::vector<Layer> layers_;
  nn::LayerNorm out_norm_;
  nn::Linear to_logits_;
  std::vector<int32_t> bucket_of_;  // bucket_of_[d] for d in [1, mem_len + seq_len]
};

}  // namespace fbt
