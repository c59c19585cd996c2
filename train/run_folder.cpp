// The Trainer's run folder (train.out_dir): preparing it (its lock, leftovers of a killed run, the
// config and tokenizer copies), starting fresh or from train.init_from's weights, resuming from the
// newest intact checkpoint, and writing checkpoints. The training loop itself: trainer.cpp.
#include <fmt/core.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>

#include "backend/threads.hpp"
#include "models/weights.hpp"
#include "train/log.hpp"
#include "train/trainer.hpp"
#include "util/files.hpp"

namespace fs = std::filesystem;

namespace fbt {

// Every process takes part (the streams' memory is gathered); the root writes, and the others
// wait until the checkpoint is complete on disk.
void Trainer::save_checkpoint() {
  const std::vector<float> mine = loop_->memory();
  const int64_t rows = loop_->memory_rows();
  std::vector<float> all(comm_.root() ? mine.size() * size_t(comm_.size()) : 0);
  comm_.gather(mine.data(), mine.size(), all.data());
  if (comm_.root()) {
    AdamW& opt = loop_->optimizer();
    opt.sync_to_host();
    TrainingState s;
    s.step = step();
    s.adam_m = opt.m(), s.adam_v = opt.v(), s.adam_steps = opt.steps_taken();
    s.memory = join_streams(*model_, all, comm_.size(), local_streams(), rows);
    s.memory_shape = model_->memory_shape(cfg_.train.batch_size, rows).dims();
    s.cursor = batcher_->cursor();
    s.dropout_rng = loop_->dropout_rng();
    s.threads = threads::max_threads();
    s.processes = comm_.size();
    s.elapsed_s = elapsed_s();
    s.valid_accuracy = evaluated_step_ == step() ? evaluated_accuracy_ : NAN;
    s.log_loss_sum = window_loss_, s.log_updates = window_updates_;
    s.config_yaml = run_config_yaml(cfg_);
    metrics_.sync();
    checkpoints_.save(*model_, s, cfg_.train.keep_last, weights_metadata());
  }
  comm_.barrier();
}

// The newest checkpoint that loads and verifies; a damaged one is skipped by name (a later save
// of its step replaces it). A checkpoint of another model config is an error, not damage. The
// root chooses; the other processes then resume from its choice.
bool Trainer::resume_latest() {
  std::string chosen;
  if (comm_.root()) {
    checkpoints_.clear_partial();
    const std::vector<std::string> dirs = checkpoints_.complete();
    for (auto dir = dirs.rbegin(); dir != dirs.rend() && chosen.empty(); ++dir) {
      try {
        resume_from(*dir);
        chosen = *dir;
      } catch (const SafeTensorsError& e) {
        log_err(fmt::format("skipping checkpoint {}: {}\n", *dir, e.what()));
      }
    }
    if (!dirs.empty() && chosen.empty())
      throw std::runtime_error("no checkpoint in " + checkpoints_.dir() +
                               " loads intact (see above): nothing to resume from");
  }
  comm_.broadcast(chosen);
  if (!comm_.root() && !chosen.empty()) resume_from(chosen);
  return !chosen.empty();
}

void Trainer::resume_from(const std::string& dir) {
  load_checkpoint_weights(*model_, dir, cfg_.source);
  const TrainingState s = load_training_state(dir);
  const std::string state_file = (fs::path(dir) / "state.safetensors").string();
  AdamW& opt = loop_->optimizer();
  if (s.adam_m.size() != opt.m().size() || s.adam_v.size() != opt.v().size())
    throw SafeTensorsError(state_file + ": optimizer state size differs from the model's parameter count");
  const int64_t rows = s.memory_shape.size() >= 3 ? s.memory_shape[s.memory_shape.size() - 2] : 0;
  if (s.memory_shape != model_->memory_shape(cfg_.train.batch_size, rows).dims())
    throw SafeTensorsError(state_file + ": stream memory does not match train.batch_size / the model");
  opt.m() = s.adam_m, opt.v() = s.adam_v;
  opt.sync_to_device();
  opt.set_steps_taken(s.adam_steps);
  loop_->set_steps_done(s.step);
  const int64_t B = local_streams();
  loop_->set_memory(rows ? select_streams(*model_, s.memory, cfg_.train.batch_size, rows, comm_.rank() * B, B)
                         : std::vector<float>{},
                    B, rows);
  batcher_->set_cursor(s.cursor);
  loop_->dropout_rng() = s.dropout_rng;
  earlier_sessions_s_ = s.elapsed_s;
  if (std::isfinite(s.valid_accuracy)) evaluated_step_ = s.step, evaluated_accuracy_ = s.valid_accuracy;
  window_loss_ = s.log_loss_sum, window_updates_ = s.log_updates;
  if (!comm_.root()) return;
  if (s.processes != comm_.size())
    log_out(fmt::format("note: checkpoint was written by {} process{}, resuming with {}: the {} streams are split anew ({} per "
                        "process); the continuation matches the {}-process run within float rounding, not bit for bit\n",
                        s.processes, s.processes == 1 ? "" : "es", comm_.size(), cfg_.train.batch_size, B, s.processes));
  log_out(fmt::format("resuming from {} (step {})\n", dir, step()));
}

// Fine-tuning: a fresh run (optimizer, schedule, memory) on another run's weights.
void Trainer::init_from(const std::string& source) {
  const std::string path = load_init_weights(*model_, source);
  if (comm_.root()) log_out(fmt::format("initialized from {}\n", path));
}

// Prepares out_dir: resumes (and cuts metrics back to the checkpoint) or starts afresh, never
// over an existing run's checkpoints.
// In a data-parallel run the root owns out_dir (its lock, metrics, config, checkpoints); every
// process loads the same weights.
void Trainer::start(bool resume) {
  const TrainConfig& t = cfg_.train;
  if (comm_.root()) {
    std::error_code ec;
    fs::create_directories(t.out_dir, ec);
    if (ec || ::access(t.out_dir.c_str(), W_OK) != 0)
      throw std::runtime_error("train.out_dir " + t.out_dir + ": cannot create or write this directory");
    lock_ = std::make_unique<RunLock>(t.out_dir, "train.out_dir " + t.out_dir);  // held until the trainer goes
    remove_stale_temporaries(t.out_dir);  // a killed run's half-written config.yaml or weights
    if (!resume && !checkpoints_.latest().empty())
      throw std::runtime_error("train.out_dir " + t.out_dir +
                               " already holds checkpoints: pass --resume to continue that run, or choose another out_dir");
  }
  comm_.barrier();  // the root has checked out_dir
  const bool resumed = resume && resume_latest();
  if (resumed) {
    if (comm_.root()) metrics_.truncate_after(step());
  } else {  // a fresh run, also when --resume finds nothing to resume (a curriculum stage's first call)
    if (comm_.root()) {
      if (resume) log_out(fmt::format("no complete checkpoint in {}: starting from step 0\n", checkpoints_.dir()));
      metrics_.clear();
    }
    if (!t.init_from.empty()) init_from(t.init_from);
  }
  if (!comm_.root()) return;
  write_text_atomic((fs::path(t.out_dir) / "config.yaml").string(), run_config_yaml(cfg_));
  if (!cfg_.data.tokenizer_model.empty()) {  // the run carries its tokenizer (fbt sample --checkpoint RUN)
    const fs::path copy = fs::path(t.out_dir) / tokenizer_file_name(cfg_.data.tokenizer);
    if (!fs::exists(copy) || !fs::equivalent(copy, cfg_.data.tokenizer_model)) {
      const std::string text = read_file(cfg_.data.tokenizer_model);
      write_file_atomic(copy.string(), text.data(), text.size());
    }
  }
}

Metadata Trainer::weights_metadata() const {
  Metadata m;
  if (cfg_.data.tokenizer.empty()) return m;
  m["fbt_tokenizer"] = cfg_.data.tokenizer;
  if (!cfg_.data.tokenizer_model.empty()) m["fbt_tokenizer_file"] = tokenizer_file_name(cfg_.data.tokenizer);
  return m;
}

}  // namespace fbt
