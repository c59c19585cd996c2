// Config-driven training runs: TBPTT streams over a corpus, periodic evaluation, logs, metrics and
// checkpoints that resume bit-exactly, in one process or data-parallel under mpirun (each process
// trains its block of the streams; the root writes). (A program with its own data uses TrainLoop.)
#pragma once
#include <chrono>
#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "data/tokens.hpp"
#include "models/call_batch.hpp"
#include "models/model.hpp"
#include "models/weights.hpp"
#include "train/checkpoint.hpp"
#include "train/config.hpp"
#include "train/evaluate.hpp"
#include "train/loop.hpp"
#include "train/metrics.hpp"
#include "util/run_lock.hpp"

namespace fbt {

// The run's tokenizer (data.tokenizer), checked against the model and the id format: more ids
// than model.num_tokens, or than u16 holds, is an error naming the file. Null without one.
std::unique_ptr<Tokenizer> run_tokenizer(const RunConfig& cfg);

// This process's streams: train.batch_size split evenly among `processes` (a data-parallel run),
// each block a whole number of grad_accum micro-batches; anything else is a config error naming
// the numbers.
int64_t streams_per_process(const RunConfig& cfg, int64_t processes);
// The training step a run config describes (schedule, clipping, AdamW, policy, dropout seed).
LoopConfig loop_config(const RunConfig& cfg);

// A measurement run every train.probe_every steps on the batch just trained on (with its
// incoming memory); it returns one JSON line for metrics.jsonl. The research tools provide one
// (research/research.hpp: probe_metrics).
using Probe = std::function<std::string(Model& model, const CallBatch& batch, int64_t step)>;

class Trainer {
 public:
  explicit Trainer(const RunConfig& cfg);

  // Needed when train.probe_every > 0.
  void set_probe(Probe probe) { probe_ = std::move(probe); }
  // Called on the root with each metrics record (one JSON line, as metrics.jsonl gets it) as it is
  // written. To stop the run from it, call request_stop() (train/interrupt.hpp).
  void set_on_record(std::function<void(const std::string& json_line)> f) { on_record_ = std::move(f); }
  // What continues this run when it stops early, for the message (default: "--resume").
  void set_resume_command(std::string command) { resume_command_ = std::move(command); }

  // Trains to cfg.train.steps; with resume, continues from the newest complete checkpoint.
  // stop_at > 0 ends the session after that step with a checkpoint (a later resume goes on).
  // Returns whether the run finished: it reached train.steps, or an evaluation reached
  // train.target_accuracy (its final weights are then in out_dir).
  bool run(bool resume, int64_t stop_at = 0);

  Model& model() { return *model_; }
  // How the run's text maps to ids (null for id files without a named tokenizer).
  const Tokenizer* tokenizer() const { return tokenizer_.get(); }
  int64_t step() const { return loop_->steps_done(); }

 private:
  // How a session of steps ended: stopped by a signal, and whether its last step was already
  // evaluated and checkpointed.
  struct Session {
    bool interrupted = false, evaluated = false, saved = false;
  };
  void start(bool resume);
  Session train_until(int64_t last);
  StepStats train_step(bool keep_batch);
  void save_checkpoint();
  bool resume_latest();
  void resume_from(const std::string& checkpoint_dir);
  void init_from(const std::string& source);
  void record(const std::string& json_line);  // to metrics.jsonl, then on_record_
  void handle_skipped(const StepStats& s, int64_t in_row);
  Metadata weights_metadata() const;  // the run's tokenizer, for the weights files
  void log_start() const;
  void log_train(const StepStats& s, double seconds, int64_t tokens, int64_t steps);
  void run_eval(bool whole_split);  // else the first train.eval_tokens
  // The evaluation of this very step reached train.target_accuracy: the run is done.
  bool target_reached() const;

  // This process's block of the streams (all of them without mpirun).
  int64_t local_streams() const { return cfg_.train.batch_size / comm_.size(); }
  // What every metrics line carries to be plotted against: tokens trained on (all processes) and
  // wall time the run has spent, over all its sessions.
  int64_t tokens_seen() const { return step() * cfg_.train.batch_size * cfg_.train.bptt; }
  double elapsed_s() const;

  RunConfig cfg_;
  Comm& comm_;  // the processes of a data-parallel run (docs/DISTRIBUTED.md)
  std::unique_ptr<Model> model_;
  std::unique_ptr<TrainLoop> loop_;
  std::unique_ptr<Corpus> train_data_, valid_data_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::unique_ptr<StreamBatcher> batcher_;
  std::vector<int32_t> inputs_, targets_;
  Probe probe_;
  std::function<void(const std::string&)> on_record_;
  std::string resume_command_ = "--resume";
  CallBatch probe_batch_;  // the batch of the last step, when a probe follows it
  std::unique_ptr<RunLock> lock_;  // on out_dir, from start() on
  Checkpoints checkpoints_;
  MetricsFile metrics_;
  bool tty_ = false;
  int64_t skipped_ = 0;  // steps whose update was dropped (on_nonfinite: skip), this session
  double earlier_sessions_s_ = 0;  // elapsed_s when this session resumed
  int64_t evaluated_step_ = -1;  // the step of the last evaluation (this session's, or the checkpoint's)
  double evaluated_accuracy_ = NAN;  // its valid accuracy (NaN without labels)
  // The training losses since the last log line, summed in order (the line logs their mean); kept
  // in checkpoints so a resumed run logs the same line as one never stopped.
  double window_loss_ = 0;
  int64_t window_updates_ = 0;
  std::chrono::steady_clock::time_point session_start_;  // run() was called
};

}  // namespace fbt
