#include "train/trainer.hpp"

#include <fmt/core.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "backend/cuda/kernels.hpp"
#include "backend/threads.hpp"
#include "models/weights.hpp"
#include "train/interrupt.hpp"
#include "train/log.hpp"
#include "train/progress.hpp"
#include "util/config_section.hpp"
#include "util/files.hpp"

namespace fs = std::filesystem;

namespace fbt {

std::unique_ptr<Tokenizer> run_tokenizer(const RunConfig& cfg) {
  const DataConfig& d = cfg.data;
  if (d.tokenizer.empty()) return nullptr;
  std::unique_ptr<Tokenizer> tok = load_tokenizer(d.tokenizer, d.tokenizer_model);
  const std::string name = d.tokenizer_model.empty() ? d.tokenizer : d.tokenizer_model;
  if (tok->size() > cfg.model.num_tokens)
    throw ConfigError(fmt::format("{}: {} ids, more than model.num_tokens {}", name, tok->size(), cfg.model.num_tokens));
  if (d.format == "u16" && tok->size() > 65536)
    throw ConfigError(fmt::format("{}: {} ids do not fit data.format u16 (65536 ids); prepare the data as u32", name,
                                  tok->size()));
  return tok;
}

LoopConfig loop_config(const RunConfig& cfg) {
  const TrainConfig& t = cfg.train;
  LoopConfig lc;
  lc.lr = t.lr, lc.warmup = t.warmup, lc.total_steps = t.steps, lc.cosine = t.schedule == "cosine", lc.min_lr = t.min_lr;
  lc.clip = t.clip, lc.adam = AdamWConfig{t.beta1, t.beta2, t.eps, t.weight_decay};
  lc.detach = DetachPolicy::parse(t.detach, cfg.model.seq_len), lc.seed = t.seed;
  lc.grad_accum = t.grad_accum;
  lc.recompute = t.recompute;
  lc.adapt_span_loss = t.adapt_span_loss;
  return lc;
}

int64_t streams_per_process(const RunConfig& cfg, int64_t processes) {
  const TrainConfig& t = cfg.train;
  if (t.batch_size % (processes * t.grad_accum))
    throw ConfigError(fmt::format("{}: train.batch_size {} does not split among {} processes{}: each needs a whole "
                                  "number of streams",
                                  cfg.source, t.batch_size, processes,
                                  t.grad_accum > 1 ? fmt::format(" x train.grad_accum {}", t.grad_accum) : ""));
  return t.batch_size / processes;
}

Trainer::Trainer(const RunConfig& cfg)
    : cfg_(cfg),
      comm_(Comm::world()),
      checkpoints_(cfg.train.out_dir),
      metrics_((fs::path(cfg.train.out_dir) / "metrics.jsonl").string()) {
  const TrainConfig& t = cfg_.train;
  const int64_t N = comm_.size();
  streams_per_process(cfg_, N);  // checked before any work
  if (t.eval_streams() % N)
    throw ConfigError(fmt::format("{}: train.eval_batch_size {} does not split among {} processes", cfg_.source,
                                  t.eval_streams(), N));
  if (t.threads > 0) threads::set_max(int(t.threads));  // 0: as the process already has it
  LoopConfig lc = loop_config(cfg_);
  lc.comm = &comm_;
  model_ = make_model(cfg_.model, /*initialize=*/false);
  model_->init(t.seed, t.init);
  const Device device = parse_device(t.device);
  if (device == Device::CUDA && N > 1) cuda::select_device(comm_.local_rank());  // one GPU per rank on a machine
  model_->to(device);
  loop_ = std::make_unique<TrainLoop>(*model_, lc);
  train_data_ = std::make_unique<Corpus>(cfg_.data.train, cfg_.data, cfg_.model.num_tokens);
  valid_data_ = std::make_unique<Corpus>(cfg_.data.valid, cfg_.data, cfg_.model.num_tokens);
  batcher_ = std::make_unique<StreamBatcher>(*train_data_, t.batch_size, t.bptt);
  StreamBatcher check_valid(*valid_data_, t.eval_streams(), t.bptt);  // fails early on a tiny split
  tokenizer_ = run_tokenizer(cfg_);
  inputs_.resize(size_t(t.batch_size * t.bptt));
  targets_.resize(size_t(t.batch_size * t.bptt));
  tty_ = log_is_terminal() && comm_.root();  // one process draws
}

StepStats Trainer::train_step(bool keep_batch) {
  int64_t n = batcher_->next(inputs_.data(), targets_.data(), false);
  if (n == 0) {  // end of a pass: every stream starts over with an empty memory
    batcher_->rewind();
    loop_->reset_memory();
    n = batcher_->next(inputs_.data(), targets_.data(), false);
  }
  // Every process reads the whole batch and trains on its own block of streams.
  const int64_t B = local_streams(), first = int64_t(comm_.rank()) * B * n;
  if (keep_batch) {
    probe_batch_.B = B, probe_batch_.T = n;
    probe_batch_.tokens.assign(inputs_.begin() + first, inputs_.begin() + first + B * n);
    probe_batch_.targets.assign(targets_.begin() + first, targets_.begin() + first + B * n);
    probe_batch_.memory = loop_->memory();
    probe_batch_.memory_rows = loop_->memory_rows();
  }
  return loop_->step(inputs_.data() + first, targets_.data() + first, B, n);
}

void Trainer::log_train(const StepStats& s, double seconds, int64_t tokens, int64_t steps) {
  if (!comm_.root()) return;
  const double bpc = s.loss / std::log(2.0);
  const double tok_s = seconds > 0 ? double(tokens) / seconds : 0;
  const std::vector<std::vector<float>> spans = model_->spans();
  std::string span_text;  // each layer's mean span in steps
  for (double mean : Model::mean_spans(spans)) span_text += fmt::format("{}{:.1f}", span_text.empty() ? " | spans " : "/", mean);
  log_out(fmt::format("step {:>6}/{} | loss {:.4f} | bpc {:.4f} | lr {:.2e} | grad norm {:.3f} | {:.0f} tok/s | {:.1f} ms/step{}\n",
                      step(), cfg_.train.steps, s.loss, bpc, s.lr, s.grad_norm, tok_s, 1000.0 * seconds / double(steps),
                      span_text));
  nlohmann::json j = {{"split", "train"},      {"step", step()},          {"loss", s.loss},
                      {"bpc", bpc},            {"lr", s.lr},              {"grad_norm", s.grad_norm},
                      {"tokens_per_s", tok_s}, {"tokens", tokens_seen()}, {"elapsed_s", elapsed_s()}};
  if (skipped_) j["skipped"] = skipped_;
  if (!spans.empty()) j["span_loss"] = s.span_loss, j["spans"] = spans;  // spans[layer][head], in steps
  record(j.dump());
}

void Trainer::record(const std::string& json_line) {
  metrics_.append(json_line);
  if (on_record_) on_record_(json_line);
}

void Trainer::run_eval(bool whole_split) {
  const TrainConfig& t = cfg_.train;
  const auto t0 = std::chrono::steady_clock::now();
  EvalResult r = evaluate(*model_, *valid_data_, t.eval_streams(), t.bptt,
                          whole_split ? 0 : t.eval_tokens, tty_, tokenizer_.get(), &comm_);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  evaluated_step_ = step(), evaluated_accuracy_ = r.labelled ? r.accuracy : NAN;  // every process has the totals
  if (!comm_.root()) return;
  if (tty_) log_out("\r\x1b[K");
  const std::string acc = r.labelled ? fmt::format(" | accuracy {:.4f}", r.accuracy)
                          : r.bytes  ? fmt::format(" | bpb {:.4f}", r.bpb())
                                     : "";
  log_out(fmt::format("valid  {:>6} | loss {:.4f} | bpc {:.4f} | ppl {:.3f}{} | {} tokens in {:.1f} s\n", step(), r.loss, r.bpc(),
                      r.perplexity(), acc, r.tokens, secs));
  nlohmann::json j = {{"split", "valid"}, {"step", step()},   {"loss", r.loss},           {"bpc", r.bpc()},
                      {"ppl", r.perplexity()}, {"tokens", tokens_seen()}, {"elapsed_s", elapsed_s()}};
  if (r.labelled) j["accuracy"] = r.accuracy;
  if (r.bytes) j["bpb"] = r.bpb();
  record(j.dump());
}

void Trainer::log_start() const {
  if (!comm_.root()) return;
  const TrainConfig& t = cfg_.train;
  const ModelConfig& m = cfg_.model;
  log_out(fmt::format("model: {:.2f}M parameters | dim {} depth {} heads {}x{} seq_len {} mem_len {} | detach {}\n",
                      double(model_->params().numel()) / 1e6, m.dim, m.depth, m.heads, m.dim_head, m.seq_len, m.mem_len,
                      loop_config(cfg_).detach.str()));
  const std::string where = model_->device() == Device::CPU ? fmt::format("cpu, {} threads", threads::max_threads())
                                                             : "cuda: " + cuda::device_name();
  log_out(fmt::format("data: train {} tokens ({} streams x {}), valid {} tokens | {} | out_dir {}\n", train_data_->size(),
                      t.batch_size, batcher_->stream_length(), valid_data_->size(), where, t.out_dir));
  if (comm_.size() > 1 || t.grad_accum > 1)
    log_out(fmt::format("data-parallel: {} process{} x {} streams{}\n", comm_.size(), comm_.size() == 1 ? "" : "es",
                        local_streams(),
                        t.grad_accum > 1
                            ? fmt::format(", {} micro-batches of {} each", t.grad_accum, local_streams() / t.grad_accum)
                            : ""));
}

// Steps until `last` or a stop request: logs, evaluations, probes and checkpoints on their
// schedules.
Trainer::Session Trainer::train_until(int64_t last) {
  const TrainConfig& t = cfg_.train;
  Progress bar("train", comm_.root() ? t.steps : 0, step());
  auto window_start = std::chrono::steady_clock::now();
  int64_t window_steps = 0, skips_in_row = 0;  // steps this session since the last log line (its tokens/s)
  const StopRequests stop;
  Session end;
  // Every process stops at the same step: a stop request anywhere ends the step for all.
  while (step() < last && !target_reached() && !comm_.any(stop.requested())) {
    const bool probe = t.probe_every && (step() + 1) % t.probe_every == 0 && comm_.root();
    StepStats s = train_step(probe);
    if (probe) record(probe_(*model_, probe_batch_, step()));  // on the root's streams
    end.evaluated = end.saved = false;
    ++window_steps;
    if (s.skipped) {
      handle_skipped(s, ++skips_in_row);
    } else {
      skips_in_row = 0;
      window_loss_ += s.loss, ++window_updates_;
    }
    if (step() % t.log_every == 0 || step() == t.steps) {
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - window_start).count();
      bar.clear();
      s.loss = window_updates_ ? window_loss_ / double(window_updates_) : NAN;  // mean over the logging interval
      log_train(s, secs, window_steps * t.batch_size * t.bptt, window_steps);
      window_start = std::chrono::steady_clock::now();
      window_steps = window_updates_ = 0, window_loss_ = 0;
    }
    bar.update(step(), fmt::format("loss {:.3f}", s.loss));
    if (t.eval_every && step() % t.eval_every == 0) {
      bar.clear();
      run_eval(step() == t.steps);
      end.evaluated = true;
    }
    if (t.checkpoint_every && step() % t.checkpoint_every == 0) save_checkpoint(), end.saved = true;
  }
  bar.clear();
  end.interrupted = step() < last && !target_reached();
  return end;
}

bool Trainer::target_reached() const {
  const double target = cfg_.train.target_accuracy;
  return target > 0 && evaluated_step_ == step() && evaluated_accuracy_ >= target;
}

double Trainer::elapsed_s() const {
  return earlier_sessions_s_ + std::chrono::duration<double>(std::chrono::steady_clock::now() - session_start_).count();
}

// A step whose update was dropped (TrainLoop::step): the run stops, or with on_nonfinite: skip
// goes on until skip_limit such steps come in a row.
void Trainer::handle_skipped(const StepStats& s, int64_t in_row) {
  const TrainConfig& t = cfg_.train;
  const std::string latest = checkpoints_.latest();
  const std::string resume_point = latest.empty() ? "no checkpoint yet" : "resume point: " + latest;
  if (t.on_nonfinite == "stop")
    throw std::runtime_error(fmt::format("step {}: {}; stopped before the update reached the weights ({})", step(),
                                         s.fault, resume_point));
  if (in_row >= t.skip_limit)
    throw std::runtime_error(fmt::format("step {}: {}; {} steps in a row skipped (train.skip_limit), stopping ({})",
                                         step(), s.fault, in_row, resume_point));
  ++skipped_;
  if (comm_.root())
    log_err(fmt::format("step {}: {}: update skipped ({} in a row, {} in all)\n", step(), s.fault, in_row, skipped_));
}

bool Trainer::run(bool resume, int64_t stop_at) {
  const TrainConfig& t = cfg_.train;
  if (t.probe_every && !probe_)
    throw std::logic_error("train.probe_every is set but the trainer was given no probe (Trainer::set_probe)");
  session_start_ = std::chrono::steady_clock::now();
  start(resume);
  log_start();
  const Session end = train_until(stop_at > 0 ? std::min(stop_at, t.steps) : t.steps);
  if (step() < t.steps && !target_reached()) {  // a session cut short on purpose: leave a checkpoint to resume from
    if (!end.saved) save_checkpoint();
    if (comm_.root())
      log_out(fmt::format("stopped at step {} of {} ({}); continue with: {}\n", step(), t.steps,
                          end.interrupted ? "interrupted" : "--stop-at", resume_command_));
    return false;
  }
  // Resumed at the last step, the final evaluation may be written already (the stop came after
  // it); every process takes the root's answer, as the evaluation is collective.
  if (!end.evaluated && !comm_.any(comm_.root() && metrics_.holds("valid", step()))) run_eval(true);
  if (!end.saved) save_checkpoint();
  if (comm_.root()) {
    if (step() < t.steps)
      log_out(fmt::format("valid accuracy {:.4f} at step {} reached train.target_accuracy {}: the run ends here\n",
                          evaluated_accuracy_, step(), t.target_accuracy));
    save_model(*model_, (fs::path(t.out_dir) / "model.safetensors").string(), weights_metadata());
    log_out(fmt::format("final weights: {}\n", (fs::path(t.out_dir) / "model.safetensors").string()));
  }
  comm_.barrier();
  return true;
}

}  // namespace fbt
