// Config-driven training runs: TBPTT streams over a corpus, evaluation, logs, metrics and
// checkpoints that resume bit-exactly. (A program with its own data uses TrainLoop, loop.hpp.)
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "autograd/rng.hpp"
#include "data/tokens.hpp"
#include "models/feedback_transformer.hpp"
#include "train/config.hpp"
#include "train/loop.hpp"
#include "train/optimizer.hpp"
#include "train/research.hpp"

namespace fbt {

struct EvalResult {
  double loss = 0;  // mean nats per predicted token
  int64_t tokens = 0;
  double bpc() const;
  double perplexity() const;
};

// Mean cross-entropy over a split read as `streams` contiguous streams with the memory carried,
// `bptt` tokens per call; max_tokens > 0 stops after about that many predicted tokens.
EvalResult evaluate(FeedbackTransformer& model, const Corpus& corpus, int64_t streams, int64_t bptt,
                    int64_t max_tokens = 0, bool show_progress = false);

// The training step a run config describes (schedule, clipping, AdamW, policy, dropout seed).
LoopConfig loop_config(const RunConfig& cfg);

class Trainer {
 public:
  explicit Trainer(const RunConfig& cfg);

  // Trains to cfg.train.steps; with resume, continues from the newest complete checkpoint.
  // stop_at > 0 ends the session after that step with a checkpoint (a later resume goes on).
  void run(bool resume, int64_t stop_at = 0);

  FeedbackTransformer& model() { return *model_; }
  int64_t step() const { return loop_->steps_done(); }

 private:
  StepStats train_step(bool keep_batch);
  void run_probe();
  void save_checkpoint();
  bool load_latest_checkpoint();
  void log_train(const StepStats& s, double seconds, int64_t tokens, int64_t steps);
  void run_eval(bool whole_split);  // else the first train.eval_tokens
  void write_metric(const std::string& json_line);

  RunConfig cfg_;
  std::unique_ptr<FeedbackTransformer> model_;
  std::unique_ptr<TrainLoop> loop_;
  std::unique_ptr<Corpus> train_data_, valid_data_;
  std::unique_ptr<StreamBatcher> batcher_;
  DetachPolicy policy_;
  std::vector<int32_t> inputs_, targets_;
  CallBatch probe_batch_;  // the batch of the last step, when a probe follows it
  std::string ckpt_dir_;
  bool tty_ = false;
};

}  // namespace fbt
