// The tape: values of one step (Nodes), the backward closures of the coarse ops that made
// them, and the arena their storage comes from. backward() runs the closures in reverse
// order; each closure *accumulates* (+=) into its inputs' gradients, which is what makes a
// value that feeds several ops sum its gradients.
#pragma once
#include <deque>
#include <functional>
#include <vector>

#include "autograd/arena.hpp"
#include "autograd/tensor.hpp"

namespace fbt {

struct Node {
  Tensor value;
  Tensor grad;                 // undefined until backward first touches it (params: always set)
  bool requires_grad = false;
  bool scratch = false;        // made inside a checkpoint: its storage is the scratch arena's
};

// A handle to a Node. Cheap to copy; valid until the owning tape is reset (parameters: forever).
class Var {
 public:
  Var() = default;
  explicit Var(Node* n) : n_(n) {}
  Node* node() const { return n_; }
  explicit operator bool() const { return n_ != nullptr; }
  const Tensor& value() const { return n_->value; }
  float* data() const { return n_->value.data; }
  const Shape& shape() const { return n_->value.shape; }
  bool requires_grad() const { return n_ && n_->requires_grad; }
  const Tensor& grad() const { return n_->grad; }
  bool operator==(const Var& o) const { return n_ == o.n_; }

 private:
  Node* n_ = nullptr;
};

class Tape {
 public:
  Tape() = default;
  Tape(const Tape&) = delete;
  Tape& operator=(const Tape&) = delete;

  // A value that is an input of the step (tokens' embeddings come from ops; this is for data).
  Var leaf(const Shape& s, bool requires_grad = false);           // uninitialised storage
  Var leaf_copy(const Tensor& src, bool requires_grad = false);   // copies src into the arena
  // An op's output: requires grad when recording and any input does.
  Var output(const Shape& s, std::initializer_list<Var> inputs);
  Var output(const Shape& s, const std::vector<Var>& inputs);
  // Same storage, no gradient path.
  Var detach(Var v);
  // Same storage, a gradient of its own: two readers of one buffer whose gradients must be told
  // apart (the memory key/value cache, project_memory in ops/attention.cpp).
  Var alias(Var v, bool requires_grad);

  // The device the step's values and gradients are allocated on; set between steps (the tape
  // must be empty). Each model's forward sets it to its parameters' device (Model::to() moves them).
  void set_device(Device d);
  Device device() const { return arena_.device(); }

  bool recording() const { return grad_enabled_; }
  // Records the backward of op `op` (a string literal, its name in profiles) whose output is
  // `out`; the sweep skips it when no gradient reached `out` (an unused output). Pass Var() for
  // ops whose outputs are not single nodes.
  void record(const char* op, Var out, std::function<void()> backward) {
    records_.push_back({out.node(), op, std::move(backward)});
  }

  // Gradient storage of v, allocated and zeroed on first use. Undefined when !requires_grad.
  Tensor grad(Var v);
  // Gradient storage of v for a kernel that writes every element of it. On its first use on the
  // CPU it is handed out unzeroed with accumulate = false, and the kernel must overwrite it; after
  // that (and always on a device) accumulate = true and the kernel adds. Saves zeroing, then
  // re-reading, the step's largest gradients. data is null when !requires_grad.
  struct GradSink {
    float* data;
    bool accumulate;
  };
  GradSink grad_sink(Var v);

  // Seeds d(out) = 1 (out must have one element) or = seed, then runs the records in reverse.
  void backward(Var out);
  void backward(Var out, const Tensor& seed);

  // Activation checkpointing (train.recompute): f, a piece of forward (one window of a sequential
  // model), runs with its values in a scratch arena, and only its outputs are kept (copied out);
  // its backward is one record that runs f again, recording this time, sweeps those records
  // and drops them, so a step holds one piece's activations at a time instead of all of them.
  // f(again) must compute the same values both times (again: the recomputation in the sweep)
  // and may read and write storage made outside it (its side effects happen twice).
  // When not recording, or already inside a checkpoint, f simply runs.
  std::vector<Var> checkpoint(const char* op, std::function<std::vector<Var>(bool again)> f);

  // Queues f to run once the current backward sweep has run every record (ops use it to batch
  // work across records: the linear layers' weight gradients, ops/linear.cpp). A checkpoint's
  // recomputation is a sweep of its own, whose sweep-end work runs when it ends (before the
  // outer sweep resumes).
  void at_sweep_end(std::function<void()> f) { sweep_end_.push_back(std::move(f)); }
  // Which sweep is in progress (a checkpoint's recomputation is one of its own): a number no
  // other sweep of this tape had; 0 outside any.
  uint64_t sweep_serial() const { return sweep_serial_; }
  // Weight-gradient products dW += dy^T x (db += column sums of dy, when db is not null) over
  // `rows` rows, deferred by the linear op to the end of the sweep in progress, in the order the
  // sweep met them: the sweep's own (a checkpoint's recomputation has its own), emptied by
  // whoever runs them (the op queues that with at_sweep_end) and dropped with the step.
  struct DeferredWeightGrad {
    float *dW, *db;
    const float *dy, *x;
    int64_t rows, In, Out;
  };
  std::vector<DeferredWeightGrad>& deferred_weight_grads() { return deferred_; }

  // Zeroes the gradients of the step's nodes (parameters: ParamStore::zero_grad), so the
  // same records can be swept again.
  void zero_grad();

  // Frees every node, record and activation of the step (parameters are not on the tape).
  void reset();

  // Where the step's storage comes from now: the scratch arena inside a checkpoint.
  Arena& arena() { return *active_; }
  // n host bytes copied into the step's arena on a device, for kernels to read. Contents staged
  // earlier in the step are reused, not copied again (a window's bucket table, read by every
  // layer): staged copies are read-only.
  const void* stage_on_device(const void* host, size_t bytes);
  size_t num_records() const { return records_.size(); }

 private:
  friend class NoGradScope;
  Arena arena_;
  Arena scratch_;  // a checkpoint's values, and its recomputation's values and gradients
  Arena* active_ = &arena_;
  std::deque<Node> nodes_;
  struct Record {
    Node* out;
    const char* op;
    std::function<void()> backward;
  };
  // A deque: a record may add records while it runs (a checkpoint's recomputation) without
  // moving the one running.
  std::deque<Record> records_;
  std::vector<std::function<void()>> sweep_end_;
  std::vector<DeferredWeightGrad> deferred_;  // the sweep in progress's
  uint64_t sweep_serial_ = 0, sweeps_ = 0;
  struct Staged {
    std::vector<char> bytes;
    const void* device;
  };
  std::deque<Staged> staged_;  // the last few staged copies of this step
  template <class Inputs>
  Var output_of(const Shape& s, const Inputs& inputs);
  Var new_node(Tensor value, bool requires_grad);
  Arena& arena_of(const Node* n) { return n->scratch ? scratch_ : arena_; }
  // Runs records [first, end) in reverse, then the sweep-end work they queued.
  void sweep(size_t first);
  // Enters (true) or leaves the scratch arena; leaving empties it.
  void use_scratch(bool on);
  bool grad_enabled_ = true;
};

// The tape ops record on: one per thread.
Tape& tape();

// Nothing recorded while it lives (evaluation, sampling, finite differences).
class NoGradScope {
 public:
  NoGradScope() : saved_(tape().grad_enabled_) { tape().grad_enabled_ = false; }
  ~NoGradScope() { tape().grad_enabled_ = saved_; }
  NoGradScope(const NoGradScope&) = delete;
  NoGradScope& operator=(const NoGradScope&) = delete;

 private:
  bool saved_;
};

inline Var detach(Var v) { return tape().detach(v); }

// One step's use of this thread's tape: it starts empty on device d and is emptied (nodes,
// records, the arena's contents) when the scope ends, so nothing of a step outlives it by
// accident and no caller has to remember a reset. Copy out what must outlive the step.
class StepScope {
 public:
  explicit StepScope(Device d) {
    tape().reset();
    tape().set_device(d);
  }
  ~StepScope() { tape().reset(); }
  StepScope(const StepScope&) = delete;
  StepScope& operator=(const StepScope&) = delete;
};

}  // namespace fbt
