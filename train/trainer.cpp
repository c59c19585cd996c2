#include "train/trainer.hpp"

#include <fcntl.h>
#include <omp.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include <fmt/core.h>

#include "data/safetensors.hpp"
#include "models/weights.hpp"
#include "ops/cuda/kernels.hpp"
#include "train/progress.hpp"
#include "train/sample.hpp"

namespace fs = std::filesystem;

namespace fbt {

double EvalResult::bpc() const { return loss / std::log(2.0); }
double EvalResult::perplexity() const { return std::exp(loss); }

EvalResult evaluate(FeedbackTransformer& model, const Corpus& corpus, int64_t streams, int64_t bptt,
                    int64_t max_tokens, bool show_progress) {
  NoGradScope ng;
  StreamBatcher batcher(corpus, streams, bptt);
  std::vector<int32_t> in(size_t(streams * bptt)), tg(size_t(streams * bptt));
  Memory memory;
  ProjectedMemory projected;  // its keys/values, reused by the next call
  double total = 0;
  int64_t count = 0;
  const int64_t budget = max_tokens > 0 ? std::min(max_tokens, streams * (batcher.stream_length() - 1))
                                        : streams * (batcher.stream_length() - 1);
  const FrozenWeights frozen = model.freeze_for(streams, budget / streams);
  Progress bar("eval", budget);
  while (count < budget) {
    const int64_t n = batcher.next(in.data(), tg.data(), true);
    if (n == 0) break;
    tape().reset();
    ForwardOutput o = model.forward(in.data(), streams, n, memory.tensor(), Var(), tg.data(), DetachPolicy{}, false,
                                    nullptr, &projected);
    total += double(to_host(o.loss.value())[0]) * double(streams * n);
    count += streams * n;
    memory.assign(o.memory);
    if (show_progress) bar.update(count);
  }
  tape().reset();
  return {count ? total / double(count) : 0.0, count};
}

namespace {

// Ctrl-C / SIGTERM during training: finish the step in flight, checkpoint, stop. A second signal
// exits at once (the newest complete checkpoint is still there).
volatile std::sig_atomic_t g_stop_requested = 0;
extern "C" void request_stop(int sig) {
  if (g_stop_requested) std::_Exit(128 + sig);
  g_stop_requested = 1;
}

std::string step_dir_name(int64_t step) { return fmt::format("step_{:08d}", step); }

void fsync_path(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

void write_text_atomic(const std::string& path, const std::string& text) { write_file_atomic(path, text.data(), text.size()); }

// Keeps the metrics of steps <= step only (a resumed run rewrites what came after).
void truncate_metrics(const std::string& path, int64_t step) {
  std::ifstream in(path);
  if (!in) return;
  std::string line, kept;
  while (std::getline(in, line)) {
    try {
      auto j = nlohmann::json::parse(line);
      if (j.value("step", int64_t(0)) <= step) kept += line + "\n";
    } catch (const std::exception&) {  // a line cut by a kill: drop it
    }
  }
  write_text_atomic(path, kept);
}

}  // namespace

LoopConfig loop_config(const RunConfig& cfg) {
  const TrainConfig& t = cfg.train;
  LoopConfig lc;
  lc.lr = t.lr, lc.warmup = t.warmup, lc.total_steps = t.steps, lc.cosine = t.schedule == "cosine", lc.min_lr = t.min_lr;
  lc.clip = t.clip, lc.adam = AdamWConfig{t.beta1, t.beta2, t.eps, t.weight_decay};
  lc.detach = DetachPolicy::parse(t.detach, cfg.model.seq_len), lc.seed = t.seed;
  return lc;
}

Trainer::Trainer(const RunConfig& cfg) : cfg_(cfg) {
  const TrainConfig& t = cfg_.train;
  if (t.threads > 0) omp_set_num_threads(int(t.threads));
  const LoopConfig lc = loop_config(cfg_);
  policy_ = lc.detach;
  model_ = std::make_unique<FeedbackTransformer>(cfg_.model, /*initialize=*/false);
  model_->init(t.seed);
  model_->to(parse_device(t.device));
  loop_ = std::make_unique<TrainLoop>(*model_, lc);
  train_data_ = std::make_unique<Corpus>(cfg_.data.train, cfg_.data.format, cfg_.model.num_tokens);
  valid_data_ = std::make_unique<Corpus>(cfg_.data.valid, cfg_.data.format, cfg_.model.num_tokens);
  batcher_ = std::make_unique<StreamBatcher>(*train_data_, t.batch_size, t.bptt);
  StreamBatcher check_valid(*valid_data_, t.eval_streams(), t.bptt);  // fails early on a tiny split
  inputs_.resize(size_t(t.batch_size * t.bptt));
  targets_.resize(size_t(t.batch_size * t.bptt));
  ckpt_dir_ = (fs::path(t.out_dir) / "checkpoints").string();
  tty_ = Progress::terminal();
}

StepStats Trainer::train_step(bool keep_batch) {
  const TrainConfig& t = cfg_.train;
  int64_t n = batcher_->next(inputs_.data(), targets_.data(), false);
  if (n == 0) {  // end of a pass: every stream starts over with an empty memory
    batcher_->rewind();
    loop_->reset_memory();
    n = batcher_->next(inputs_.data(), targets_.data(), false);
  }
  if (keep_batch) {
    probe_batch_.B = t.batch_size, probe_batch_.T = n;
    probe_batch_.tokens.assign(inputs_.begin(), inputs_.begin() + t.batch_size * n);
    probe_batch_.targets.assign(targets_.begin(), targets_.begin() + t.batch_size * n);
    probe_batch_.memory = loop_->memory();
    probe_batch_.memory_rows = loop_->memory_rows();
  }
  return loop_->step(inputs_.data(), targets_.data(), t.batch_size, n);
}

void Trainer::write_metric(const std::string& line) {
  std::ofstream out(fs::path(cfg_.train.out_dir) / "metrics.jsonl", std::ios::app);
  out << line << "\n";
}

void Trainer::log_train(const StepStats& s, double seconds, int64_t tokens, int64_t steps) {
  const double bpc = s.loss / std::log(2.0);
  const double tok_s = seconds > 0 ? double(tokens) / seconds : 0;
  fmt::print("step {:>6}/{} | loss {:.4f} | bpc {:.4f} | lr {:.2e} | grad norm {:.3f} | {:.0f} tok/s | {:.1f} ms/step\n",
             step(), cfg_.train.steps, s.loss, bpc, s.lr, s.grad_norm, tok_s, 1000.0 * seconds / double(steps));
  std::fflush(stdout);
  nlohmann::json j = {{"split", "train"}, {"step", step()},          {"loss", s.loss},        {"bpc", bpc},
                      {"lr", s.lr},       {"grad_norm", s.grad_norm}, {"tokens_per_s", tok_s}};
  write_metric(j.dump());
}

void Trainer::run_eval(bool whole_split) {
  const TrainConfig& t = cfg_.train;
  const auto t0 = std::chrono::steady_clock::now();
  EvalResult r = evaluate(*model_, *valid_data_, t.eval_streams(), t.bptt,
                          whole_split ? 0 : t.eval_tokens, tty_);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (tty_) fmt::print("\r\x1b[K");
  fmt::print("valid  {:>6} | loss {:.4f} | bpc {:.4f} | ppl {:.3f} | {} tokens in {:.1f} s\n", step(), r.loss, r.bpc(),
             r.perplexity(), r.tokens, secs);
  std::fflush(stdout);
  nlohmann::json j = {{"split", "valid"}, {"step", step()}, {"loss", r.loss}, {"bpc", r.bpc()}, {"ppl", r.perplexity()}};
  write_metric(j.dump());
}

// The gradient norm of the last position's loss by memory lag (mean over the batch rows), on the
// batch just trained on, and the memory mix weights: one "probe" line in metrics.jsonl.
void Trainer::run_probe() {
  const auto lags = grad_norm_by_lag(*model_, probe_batch_, policy_);
  std::vector<double> mean;
  for (const auto& rows : lags) {
    double s = 0;
    for (double v : rows) s += v;
    mean.push_back(s / double(rows.size()));
  }
  nlohmann::json j = {{"split", "probe"}, {"step", step()}, {"lag_grad_norm", mean}, {"layer_mix", layer_mix(*model_)}};
  write_metric(j.dump());
}

void Trainer::save_checkpoint() {
  fs::create_directories(ckpt_dir_);
  const fs::path final_dir = fs::path(ckpt_dir_) / step_dir_name(step());
  const fs::path tmp_dir = fs::path(ckpt_dir_) / (step_dir_name(step()) + ".tmp");
  fs::remove_all(tmp_dir);
  fs::create_directories(tmp_dir);
  save_model(*model_, (tmp_dir / "model.safetensors").string());

  SafeTensors state;
  const int64_t P = int64_t(model_->params().numel());
  loop_->optimizer().sync_to_host();
  state.tensors["adam.m"] = StTensor::from_f32({P}, loop_->optimizer().m().data());
  state.tensors["adam.v"] = StTensor::from_f32({P}, loop_->optimizer().v().data());
  state.tensors["memory"] =
      StTensor::from_f32({cfg_.train.batch_size, loop_->memory_rows(), cfg_.model.dim}, loop_->memory().data());
  state.metadata["step"] = std::to_string(step());
  state.metadata["adam_steps"] = std::to_string(loop_->optimizer().steps_taken());
  state.metadata["cursor"] = std::to_string(batcher_->cursor());
  state.metadata["dropout_rng_seed"] = std::to_string(loop_->dropout_rng().seed);
  state.metadata["dropout_rng_counter"] = std::to_string(loop_->dropout_rng().counter);
  state.metadata["threads"] = std::to_string(omp_get_max_threads());
  state.metadata["config"] = run_config_yaml(cfg_);
  state.save((tmp_dir / "state.safetensors").string());
  write_text_atomic((tmp_dir / "DONE").string(), std::to_string(step()) + "\n");
  fsync_path(tmp_dir.string());
  fs::remove_all(final_dir);
  fs::rename(tmp_dir, final_dir);
  fsync_path(ckpt_dir_);

  // Prune: keep the newest keep_last complete checkpoints.
  std::vector<std::string> done;
  for (const auto& e : fs::directory_iterator(ckpt_dir_)) {
    const std::string name = e.path().filename().string();
    if (name.size() == 13 && name.rfind("step_", 0) == 0 && fs::exists(e.path() / "DONE")) done.push_back(name);
  }
  std::sort(done.begin(), done.end());
  for (size_t i = 0; i + size_t(cfg_.train.keep_last) < done.size(); ++i) fs::remove_all(fs::path(ckpt_dir_) / done[i]);
}

bool Trainer::load_latest_checkpoint() {
  // Leftovers of a save that was killed midway are never complete: clear them.
  std::error_code ec;
  if (fs::is_directory(ckpt_dir_, ec))
    for (const auto& e : fs::directory_iterator(ckpt_dir_))
      if (e.path().extension() == ".tmp") fs::remove_all(e.path());
  const std::string dir = latest_checkpoint(cfg_.train.out_dir);
  if (dir.empty()) return false;
  const std::string wpath = (fs::path(dir) / "model.safetensors").string(), spath = (fs::path(dir) / "state.safetensors").string();
  SafeTensors w = SafeTensors::load(wpath);
  const ModelConfig saved = model_config_from_json(w.metadata.count("fbt_model_config") ? w.metadata.at("fbt_model_config") : "",
                                                   wpath);
  if (model_config_to_json(saved) != model_config_to_json(cfg_.model))
    throw std::runtime_error(wpath + ": the checkpoint's model config differs from " + cfg_.source + "'s model: section");
  load_weights(*model_, w, wpath);
  SafeTensors st = SafeTensors::load(spath);
  auto meta = [&](const std::string& k) -> int64_t {
    if (!st.metadata.count(k)) throw SafeTensorsError(spath + ": missing metadata '" + k + "'");
    return std::stoll(st.metadata.at(k));
  };
  std::vector<float> m = st.at("adam.m").to_f32(spath), v = st.at("adam.v").to_f32(spath);
  AdamW& opt = loop_->optimizer();
  if (m.size() != opt.m().size() || v.size() != opt.v().size())
    throw SafeTensorsError(spath + ": optimizer state size differs from the model's parameter count");
  opt.m() = m;
  opt.v() = v;
  opt.sync_to_device();
  if (meta("adam_steps") != meta("step")) throw SafeTensorsError(spath + ": step and optimizer step disagree");
  opt.set_steps_taken(meta("adam_steps"));
  const StTensor& mem = st.at("memory");
  if (mem.shape.size() != 3 || mem.shape[0] != cfg_.train.batch_size || mem.shape[2] != cfg_.model.dim)
    throw SafeTensorsError(spath + ": stream memory does not match train.batch_size / model.dim");
  loop_->set_memory(mem.to_f32(spath), mem.shape[0], mem.shape[1]);
  batcher_->set_cursor(meta("cursor"));
  loop_->dropout_rng().seed = uint64_t(std::stoull(st.metadata.at("dropout_rng_seed")));
  loop_->dropout_rng().counter = uint64_t(std::stoull(st.metadata.at("dropout_rng_counter")));
  const int64_t threads = meta("threads");
  if (threads != omp_get_max_threads())
    fmt::print("warning: checkpoint was written with {} threads, resuming with {}: the continuation will not be "
               "bit-identical\n",
               threads, omp_get_max_threads());
  fmt::print("resuming from {} (step {})\n", dir, step());
  return true;
}

void Trainer::run(bool resume, int64_t stop_at) {
  const TrainConfig& t = cfg_.train;
  std::error_code ec;
  fs::create_directories(t.out_dir, ec);
  if (ec || ::access(t.out_dir.c_str(), W_OK) != 0)
    throw std::runtime_error("train.out_dir " + t.out_dir + ": cannot create or write this directory");
  const std::string metrics = (fs::path(t.out_dir) / "metrics.jsonl").string();
  if (resume) {
    if (!load_latest_checkpoint()) fmt::print("no complete checkpoint in {}: starting from step 0\n", ckpt_dir_);
    truncate_metrics(metrics, step());
  } else if (!latest_checkpoint(t.out_dir).empty()) {
    throw std::runtime_error("train.out_dir " + t.out_dir +
                             " already holds checkpoints: pass --resume to continue that run, or choose another out_dir");
  } else {
    write_text_atomic(metrics, "");
  }
  write_text_atomic((fs::path(t.out_dir) / "config.yaml").string(), run_config_yaml(cfg_));

  const int64_t P = int64_t(model_->params().numel());
  fmt::print("model: {:.2f}M parameters | dim {} depth {} heads {}x{} seq_len {} mem_len {} | detach {}\n", double(P) / 1e6,
             cfg_.model.dim, cfg_.model.depth, cfg_.model.heads, cfg_.model.dim_head, cfg_.model.seq_len,
             cfg_.model.mem_len, policy_.str());
  const std::string where = model_->device() == Device::CPU ? fmt::format("cpu, {} threads", omp_get_max_threads())
                                                             : "cuda: " + cuda::device_name();
  fmt::print("data: train {} tokens ({} streams x {}), valid {} tokens | {} | out_dir {}\n", train_data_->size(),
             t.batch_size, batcher_->stream_length(), valid_data_->size(), where, t.out_dir);

  Progress bar("train", t.steps, step());
  auto window_start = std::chrono::steady_clock::now();
  int64_t window_tokens = 0, window_steps = 0;
  double window_loss = 0;
  bool evaluated = false, saved = false;
  const int64_t last = stop_at > 0 ? std::min(stop_at, t.steps) : t.steps;
  g_stop_requested = 0;
  auto old_int = std::signal(SIGINT, request_stop), old_term = std::signal(SIGTERM, request_stop);
  while (step() < last && !g_stop_requested) {
    const bool probe = t.probe_every && (step() + 1) % t.probe_every == 0;
    StepStats s = train_step(probe);
    if (probe) run_probe();
    window_tokens += t.batch_size * t.bptt;
    window_loss += s.loss;
    ++window_steps;
    evaluated = saved = false;
    if (!std::isfinite(s.loss)) throw std::runtime_error(fmt::format("step {}: loss is {}, stopping", step(), s.loss));
    if (step() % t.log_every == 0 || step() == t.steps) {
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - window_start).count();
      bar.clear();
      s.loss = window_loss / double(window_steps);  // mean over the logging interval
      log_train(s, secs, window_tokens, window_steps);
      window_start = std::chrono::steady_clock::now();
      window_tokens = window_steps = 0;
      window_loss = 0;
    }
    bar.update(step(), fmt::format("loss {:.3f}", s.loss));
    if (t.eval_every && step() % t.eval_every == 0) {
      bar.clear();
      run_eval(step() == t.steps);
      evaluated = true;
    }
    if (t.checkpoint_every && step() % t.checkpoint_every == 0) {
      save_checkpoint();
      saved = true;
    }
  }
  bar.clear();
  std::signal(SIGINT, old_int), std::signal(SIGTERM, old_term);
  if (step() < t.steps) {  // a session cut short on purpose: leave a checkpoint to resume from
    if (!saved) save_checkpoint();
    fmt::print("stopped at step {} of {} ({}); continue with --resume\n", step(), t.steps,
               g_stop_requested ? "interrupted" : "--stop-at");
    return;
  }
  if (!evaluated) run_eval(true);
  if (!saved) save_checkpoint();
  save_model(*model_, (fs::path(t.out_dir) / "model.safetensors").string());
  fmt::print("final weights: {}\n", (fs::path(t.out_dir) / "model.safetensors").string());

  if (t.sample_tokens > 0 && cfg_.model.num_tokens == 256) {
    std::string prompt = t.sample_prompt.empty() ? "\n" : t.sample_prompt;
    std::vector<int32_t> ids(prompt.begin(), prompt.end());
    for (int32_t& id : ids) id &= 0xff;
    fmt::print("sample ({} tokens, temperature 0.8, top-k 200):\n{}", t.sample_tokens, prompt);
    SampleOptions so;
    so.tokens = t.sample_tokens;
    so.seed = t.seed;
    generate(*model_, ids, so, [](int32_t tok) { std::putchar(char(tok)); });
    fmt::print("\n");
  }
}

}  // namespace fbt
