// What every model family offers (MODEL.md: the Feedback Transformer, and the Transformer-XL-style
// baseline): named parameters, a call over (B, T) tokens with a state carried from call to call,
// and the state types. Training, evaluation, sampling and checkpoints work on a Model.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "autograd/params.hpp"
#include "backend/rng.hpp"
#include "models/config.hpp"
#include "models/detach_policy.hpp"
#include "nn/memory.hpp"
#include "ops/ops.hpp"

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

// A memory state kept across calls ((B, m, D) for the feedback model, (L, B, m, D) for the
// baseline), where the model computes: ForwardOutput::memory
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
  // The state as a tensor view (null while empty).
  const Tensor* tensor() {
    view_ = Tensor{buf_.data(), shape_, buf_.device()};
    return rows() ? &view_ : nullptr;
  }
  const Shape& shape() const { return shape_; }
  // Rows per stream: (B, m, D) and (L, B, m, D) alike.
  int64_t rows() const { return shape_.nd >= 3 ? shape_[shape_.nd - 2] : 0; }
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
  Memory memory;               // Model::memory_shape
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
  // Activation checkpointing (train.recompute): the call keeps only each piece's outputs (the
  // feedback model's windows: their hidden states and memory vectors; the baseline's layers:
  // their inputs) and its backward recomputes one piece at a time (Tape::checkpoint), to the
  // same floats. rng and the context must then live until the backward has run.
  bool recompute = false;
};

struct ForwardOutput {
  Var logits;     // (B,T,V)
  Var loss;       // 0-d mean cross-entropy (only when targets were given)
  Tensor memory;  // (B,m',D) state after the call, m' = min(mem_len, m + T); arena storage
  // The memory vectors written by the call, one node per window, (B,n,D) each, in step order:
  // their gradients are what the research tools (research/research.hpp) measure.
  std::vector<Var> written;
  std::vector<int64_t> written_start;  // first call step of each window
  // The baseline (per-layer memory): the input of every layer, (B,T,D) each.
  std::vector<Var> layer_inputs;
};

class Model {
 public:
  virtual ~Model() = default;
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  const ModelConfig& config() const { return cfg_; }
  ParamStore& params() { return params_; }
  const ParamStore& params() const { return params_; }

  // Where the model computes: its parameters move to d (the one place a program chooses the
  // device; train.device in a config). A call runs its step on d (StepScope, autograd/tape.hpp);
  // calls take host or device tensors alike, results live on d.
  void to(Device d) { params_.to(d); }
  Device device() const { return params_.device(); }
  // Adaptive span: every layer's heads' spans in steps (z * mem_len), layer by layer; empty
  // without model.adapt_span.
  std::vector<std::vector<float>> spans() const;
  // The same as span ratios z, as the parameters hold them.
  std::vector<std::vector<float>> span_ratios() const;
  // The farthest key distance whose mask any head keeps (above 0, or at 0 where its gradient
  // still passes): keys farther back are neither computed nor read (MODEL.md allows it; their
  // weights are 0). Without adaptive span: no limit.
  int64_t span_reach() const;
  // Each layer's mean of spans (Model::spans()[l]), as the log and `fbt spans` print it.
  static std::vector<double> mean_spans(const std::vector<std::vector<float>>& spans);

  // Initialization for training from scratch (docs/ARCHITECTURE.md); both schemes give zero
  // biases, unit norms and layer_weight ones.
  //  "gpt2": every matrix normal(0, 0.02), output projections of residual branches 0.02/sqrt(2L).
  //  "torch": PyTorch's defaults: every matrix uniform(+-1/sqrt(fan_in)) as torch.nn.Linear's,
  //  token_emb normal(0, 1) as torch.nn.Embedding's; pos_bias normal(0, 0.02) as in gpt2. At
  //  GPT-2's widths the two agree (1/sqrt(3 * 768) = 0.021); at small widths "torch" is larger.
  void init(uint64_t seed, const std::string& scheme = "gpt2");
  // std::invalid_argument unless `scheme` is one init() knows.
  static void check_init_scheme(const std::string& scheme);

  // tokens:(B,T) ids. state: the memory carried in (null or empty: none), replaced by the call's
  // memory when given. Records on tape() when recording.
  virtual ForwardOutput forward(const int32_t* tokens, int64_t B, int64_t T, State* state = nullptr,
                                const CallOptions& options = {}) = 0;
  // The scope for work that only reads the weights over `steps` steps of B streams (packs the
  // products that profit, where any do).
  virtual FrozenWeights freeze_for(int64_t B, int64_t steps) = 0;
  // The shape of a state of `rows` rows per stream for B streams.
  virtual Shape memory_shape(int64_t B, int64_t rows) const = 0;

  // T5 causal bucket of a distance d >= 1 (MODEL.md).
  static int32_t bucket(int64_t d, int64_t num_buckets, int64_t max_distance);

 protected:
  explicit Model(const ModelConfig& cfg);
  // The arguments of a call against the config: (B, T), the state's shape (memory_shape, at
  // most mem_len rows), the context exactly with cross_attend, a generator for dropout.
  void check_call(int64_t B, int64_t T, const State* state, const CallOptions& o) const;
  // piece() under Tape::checkpoint when o.recompute, else simply run. Recomputed, its dropout
  // draws the same numbers: the generator is set back to where the piece began, then restored.
  static std::vector<Var> run_piece(const CallOptions& o, std::function<std::vector<Var>()> piece);
  ModelConfig cfg_;
  ParamStore params_;
};

// A state's streams by block (data-parallel ranks, gradient accumulation's micro-batches): the
// streams [first, first + count) of a state of B streams (Model::memory_shape(B, rows)), and the
// inverse, `blocks` states of `count` streams each, end to end, joined into one of blocks x count.
std::vector<float> select_streams(const Model& m, const std::vector<float>& state, int64_t B, int64_t rows,
                                  int64_t first, int64_t count);
std::vector<float> join_streams(const Model& m, const std::vector<float>& blocks, int64_t nblocks, int64_t count,
                                int64_t rows);

// The self-attention's adaptive span as the model config sets it (MODEL.md; both families).
inline nn::SpanSettings span_settings(const ModelConfig& c) { return {c.adapt_span, c.mem_len, c.adapt_span_ramp}; }

// The model of cfg.type (feedback or transformer_xl). initialize: run init(0); false leaves the
// parameters zero, for weights loaded right after (drawing tens of millions of normals only to
// overwrite them costs a second at start-up).
std::unique_ptr<Model> make_model(const ModelConfig& cfg, bool initialize = true);
// Whether the model is the Transformer-XL-style baseline (no shared memory, no policies).
inline bool is_baseline(const Model& m) { return m.config().type == "transformer_xl"; }

}  // namespace fbt
