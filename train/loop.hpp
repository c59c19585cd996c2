// One training step, for fbt's own trainer and for programs that bring their own data:
// forward with dropout, backward under the detachment policy, clipping, the schedule, AdamW,
// and each row's memory carried into the next call (as a constant, MODEL.md).
//
// A step may run as micro-batches (grad_accum) and across processes (comm, docs/DISTRIBUTED.md).
// Its gradient is then the mean loss's over all of them: each micro-batch's gradient, computed
// from zero and scaled by its share of the step's targets, is added in micro-batch order, and
// the processes' sums in rank order. Micro-batch j of the whole step (rank r's k-th is
// j = r * grad_accum + k) draws its dropout from its own stream, so N processes give the same
// bits as one process with grad_accum N.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "backend/comm.hpp"
#include "backend/rng.hpp"
#include "models/model.hpp"
#include "train/optimizer.hpp"

namespace fbt {

struct LoopConfig {
  double lr = 1e-3;
  int64_t warmup = 0;
  int64_t total_steps = 0;  // > 0 with cosine: the step where min_lr is reached
  bool cosine = false;
  double min_lr = 0.0;
  double clip = 1.0;        // global grad-norm clip; 0 disables
  AdamWConfig adam{};
  DetachPolicy detach{};
  uint64_t seed = 0;        // dropout
  int64_t grad_accum = 1;   // micro-batches per step (the rows given to step() split evenly)
  bool recompute = false;   // activation checkpointing (CallOptions::recompute): same floats, less memory
  // Adaptive span (model.adapt_span): the objective adds adapt_span_loss * mem_len * sum over
  // layers of the heads' mean span ratio z; after each update every z is clamped to [0, 1].
  double adapt_span_loss = 0.0;
  Comm* comm = nullptr;     // the processes whose gradients are summed (null: this one alone)
};

struct StepStats {
  double loss = 0, grad_norm = 0, lr = 0;  // loss: the cross-entropy alone
  double span_loss = 0;  // the adaptive-span term added to the objective (0 without one)
  // The loss or the gradient norm was not finite: the optimizer did not touch the weights.
  // `fault` then says what and names the first parameter with a non-finite gradient.
  bool skipped = false;
  std::string fault;
};

// The name of the first parameter (in ParamStore order) whose gradient holds a NaN or an
// infinity, "" if none.
std::string first_nonfinite_gradient(ParamStore& params);

class TrainLoop {
 public:
  TrainLoop(Model& model, const LoopConfig& cfg);

  // One optimizer step on inputs/targets (B,T): this process's rows (with comm, every process
  // calls it with its own). Row b continues from the memory row b ended with in the previous
  // call (the batch size must not change without reset_memory()).
  // A non-finite loss or gradient norm skips the update (StepStats::skipped) but still counts as
  // a step of the schedule; a memory left non-finite by it is reset.
  StepStats step(const int32_t* inputs, const int32_t* targets, int64_t B, int64_t T);
  void reset_memory();

  // Steps taken, skipped ones included (the optimizer's own count, optimizer().steps_taken(),
  // leaves those out).
  int64_t steps_done() const { return steps_; }
  void set_steps_done(int64_t steps) { steps_ = steps; }
  AdamW& optimizer() { return opt_; }
  Rng& dropout_rng() { return rng_; }
  // The carried state of this process's B rows (Model::memory_shape(B, rows)) on the host, for
  // checkpoints and probes (it is kept on the model's device between steps).
  std::vector<float> memory() const;
  int64_t memory_rows() const { return states_[0].memory.rows(); }
  void set_memory(const std::vector<float>& data, int64_t B, int64_t rows);

 private:
  Model& model_;
  LoopConfig cfg_;
  AdamW opt_;
  Rng rng_;
  std::vector<State> states_;  // each micro-batch's rows' memory, carried from one step to the next
  DeviceBuffer accumulated_;   // the step's gradient while its micro-batches run (grad_accum > 1)
  int64_t batch_ = 0;
  int64_t steps_ = 0;

  // The step's parts. The summed gradient of the micro-batches (each weighted by its share of the
  // step's `total` targets) into the parameters' gradient block; returns this process's sum of
  // loss x targets over its micro-batches.
  double micro_batch_gradients(const int32_t* inputs, const int32_t* targets, int64_t rows, int64_t T,
                               const std::vector<double>& count, double total);
  // A step whose loss or gradient norm is not finite: no update, the fault named, a memory that
  // went non-finite dropped.
  void skip_update(StepStats& s);
  // The adaptive-span term: its value, its gradient added to the span ratios'.
  double add_span_loss();
  // Every span ratio back into [0, 1] after an update.
  void clamp_spans();
};

}  // namespace fbt
