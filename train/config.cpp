#include "train/config.hpp"

#include <cmath>
#include <filesystem>

#include <yaml-cpp/yaml.h>

#include <thread>

#include "backend/device.hpp"
#include "util/config_section.hpp"
#include "models/detach_policy.hpp"
#include "models/model.hpp"

namespace fbt {

const std::string& DataConfig::split(const std::string& name) const {
  const std::string* path = name == "train" ? &train : name == "valid" ? &valid : name == "test" ? &test : nullptr;
  if (!path) throw std::invalid_argument("split '" + name + "': expected train, valid or test");
  if (path->empty()) throw std::invalid_argument("split '" + name + "': data." + name + " is not set in the config");
  return *path;
}

namespace {

// Reads whole-number key `key` of t (default `fallback`), at least `min`.
int64_t at_least(ConfigSection& t, const char* key, int64_t fallback, int64_t min) {
  const int64_t v = t.get<int64_t>(key, fallback);
  if (v < min) t.fail(key, "must be >= " + std::to_string(min) + ", got " + std::to_string(v));
  return v;
}

DataConfig parse_data_config(ConfigSection& d) {
  DataConfig dc;
  dc.format = d.get<std::string>("format", dc.format);
  if (dc.format != "bytes" && dc.format != "u16" && dc.format != "u32" && dc.format != "llmc" && dc.format != "text")
    d.fail("format", "'" + dc.format + "' is not one of bytes, u16, u32, llmc, text");
  dc.train = d.require<std::string>("train");
  dc.valid = d.require<std::string>("valid");
  dc.test = d.get<std::string>("test", "");
  if (dc.format == "text") dc.vocab = d.require<std::string>("vocab");
  else if (d.has("vocab")) d.fail("vocab", "only format text reads a vocabulary");
  dc.labels = d.get<bool>("labels", dc.labels);
  if (dc.labels && dc.format != "text") d.fail("labels", "labels need format text, not " + dc.format);
  dc.ignore_label = d.get<std::string>("ignore_label", dc.ignore_label);
  if (dc.ignore_label.empty() || dc.ignore_label.find_first_of(" \t") != std::string::npos)
    d.fail("ignore_label", "must be one token without spaces");
  const std::string implied = dc.format == "bytes" ? "bytes" : dc.format == "text" ? "words" : "";
  dc.tokenizer = d.get<std::string>("tokenizer", implied);
  if (dc.tokenizer != "" && dc.tokenizer != "bytes" && dc.tokenizer != "words" && dc.tokenizer != "sentencepiece")
    d.fail("tokenizer", "'" + dc.tokenizer + "' is not one of bytes, words, sentencepiece");
  if (!implied.empty() && dc.tokenizer != implied)
    d.fail("tokenizer", "format " + dc.format + " is read with the " + implied + " tokenizer, not " + dc.tokenizer);
  if (dc.format == "text") {
    if (d.has("tokenizer_model")) d.fail("tokenizer_model", "format text's tokenizer is data.vocab");
    dc.tokenizer_model = dc.vocab;
  } else if (dc.tokenizer == "words" || dc.tokenizer == "sentencepiece") {
    dc.tokenizer_model = d.require<std::string>("tokenizer_model");
    if (!std::filesystem::is_regular_file(dc.tokenizer_model))
      d.fail("tokenizer_model", dc.tokenizer_model + ": no such file");
  } else if (d.has("tokenizer_model")) {
    d.fail("tokenizer_model", "only the words and sentencepiece tokenizers read a file");
  }
  d.finish();
  return dc;
}

// The optimizer, schedule and step settings (a model of window seq_len; the baseline or not).
void parse_optimization(ConfigSection& t, TrainConfig& tc, int64_t seq_len, bool baseline) {
  tc.batch_size = at_least(t, "batch_size", tc.batch_size, 1);
  tc.grad_accum = at_least(t, "grad_accum", tc.grad_accum, 1);
  if (tc.batch_size % tc.grad_accum)
    t.fail("grad_accum", "batch_size " + std::to_string(tc.batch_size) + " does not split into " +
                             std::to_string(tc.grad_accum) + " micro-batches of equal streams");
  tc.bptt = at_least(t, "bptt", tc.bptt, 1);
  tc.recompute = t.get<bool>("recompute", tc.recompute);
  tc.steps = at_least(t, "steps", tc.steps, 1);
  tc.lr = t.get<double>("lr", tc.lr);
  tc.warmup = t.get<int64_t>("warmup", tc.warmup);
  tc.schedule = t.get<std::string>("schedule", tc.schedule);
  if (tc.schedule != "constant" && tc.schedule != "cosine")
    t.fail("schedule", "'" + tc.schedule + "' is not one of constant, cosine");
  tc.min_lr = t.get<double>("min_lr", tc.min_lr);
  tc.weight_decay = t.get<double>("weight_decay", tc.weight_decay);
  tc.beta1 = t.get<double>("beta1", tc.beta1);
  tc.beta2 = t.get<double>("beta2", tc.beta2);
  tc.eps = t.get<double>("eps", tc.eps);
  tc.clip = t.get<double>("clip", tc.clip);
  const auto [bad_key, problem] = optimizer_setting_error(
      {tc.lr, tc.min_lr, tc.weight_decay, tc.beta1, tc.beta2, tc.eps, tc.clip, tc.warmup});
  if (!bad_key.empty()) t.fail(bad_key, problem);
  tc.adapt_span_loss = t.get<double>("adapt_span_loss", tc.adapt_span_loss);
  if (!(tc.adapt_span_loss >= 0 && std::isfinite(tc.adapt_span_loss))) t.fail("adapt_span_loss", "must be >= 0");
  tc.on_nonfinite = t.get<std::string>("on_nonfinite", tc.on_nonfinite);
  if (tc.on_nonfinite != "stop" && tc.on_nonfinite != "skip")
    t.fail("on_nonfinite", "must be stop or skip, got '" + tc.on_nonfinite + "'");
  tc.skip_limit = at_least(t, "skip_limit", tc.skip_limit, 1);
  tc.detach = t.get<std::string>("detach", tc.detach);
  try {
    DetachPolicy::parse(tc.detach, seq_len);
  } catch (const std::invalid_argument& e) {
    t.fail("detach", e.what());
  }
  if (baseline && tc.detach != "none")
    t.fail("detach", "detachment policies do not apply to model type transformer_xl (its state is always a constant)");
}

// Where and how often: seed, threads, device, evaluation, logging, checkpoints, output, sample.
void parse_run_settings(ConfigSection& t, TrainConfig& tc) {
  tc.seed = uint64_t(at_least(t, "seed", int64_t(tc.seed), 0));
  tc.threads = at_least(t, "threads", tc.threads, 0);
  tc.device = t.get<std::string>("device", tc.device);
  try {
    parse_device(tc.device);
  } catch (const std::invalid_argument& e) {
    t.fail("device", e.what());
  }
  tc.eval_every = at_least(t, "eval_every", tc.eval_every, 0);
  tc.eval_batch_size = at_least(t, "eval_batch_size", tc.eval_batch_size, 0);
  tc.eval_tokens = at_least(t, "eval_tokens", tc.eval_tokens, 0);
  tc.log_every = at_least(t, "log_every", tc.log_every, 1);
  tc.checkpoint_every = at_least(t, "checkpoint_every", tc.checkpoint_every, 0);
  tc.keep_last = at_least(t, "keep_last", tc.keep_last, 1);
  tc.out_dir = t.get<std::string>("out_dir", tc.out_dir);
  if (tc.out_dir.empty()) t.fail("out_dir", "must not be empty");
  tc.init = t.get<std::string>("init", tc.init);
  try {
    Model::check_init_scheme(tc.init);
  } catch (const std::invalid_argument& e) {
    t.fail("init", e.what());
  }
  tc.init_from = t.get<std::string>("init_from", tc.init_from);
  tc.probe_every = at_least(t, "probe_every", tc.probe_every, 0);
  tc.target_accuracy = t.get<double>("target_accuracy", tc.target_accuracy);
  if (!(tc.target_accuracy >= 0 && tc.target_accuracy <= 1))
    t.fail("target_accuracy", "must be in [0, 1] (0: train to train.steps)");
  tc.sample_tokens = at_least(t, "sample_tokens", tc.sample_tokens, 0);
  tc.sample_prompt = t.get<std::string>("sample_prompt", tc.sample_prompt);
}

}  // namespace

std::pair<std::string, std::string> optimizer_setting_error(const OptimizerSettings& s) {
  if (!(s.lr > 0 && std::isfinite(s.lr))) return {"lr", "must be > 0"};
  if (s.warmup < 0) return {"warmup", "must be >= 0, got " + std::to_string(s.warmup)};
  if (!(s.min_lr >= 0 && s.min_lr <= s.lr)) return {"min_lr", "must be in [0, lr]"};
  if (!(s.weight_decay >= 0 && std::isfinite(s.weight_decay))) return {"weight_decay", "must be >= 0"};
  if (!(s.beta1 >= 0 && s.beta1 < 1)) return {"beta1", "must be in [0, 1)"};
  if (!(s.beta2 >= 0 && s.beta2 < 1)) return {"beta2", "must be in [0, 1)"};
  if (!(s.eps > 0 && std::isfinite(s.eps))) return {"eps", "must be > 0"};
  if (!(s.clip >= 0 && std::isfinite(s.clip))) return {"clip", "must be >= 0 (0 disables clipping)"};
  return {};
}

RunConfig load_run_config(const std::string& path, const std::vector<std::string>& overrides, bool require_data) {
  YAML::Node root = load_yaml_file(path);
  if (!root.IsMap()) throw ConfigError(path + ": expected sections model:, data: and train:");
  for (const std::string& o : overrides) apply_override(root, o);
  ConfigSection top(root, path, "");
  RunConfig rc;
  rc.source = path;

  ConfigSection m = top.section("model");
  if (!top.has("model")) top.fail("model", "required section is missing");
  rc.model = parse_model_config(m);

  ConfigSection d = top.section("data");
  if (top.has("data")) {
    rc.data = parse_data_config(d);
    if (rc.data.format == "bytes" && rc.model.num_tokens != 256)
      m.fail("num_tokens", "format bytes needs num_tokens: 256, got " + std::to_string(rc.model.num_tokens));
  } else if (require_data) {
    top.fail("data", "required section is missing");
  }

  ConfigSection t = top.section("train");
  parse_optimization(t, rc.train, rc.model.seq_len, rc.model.type == "transformer_xl");
  parse_run_settings(t, rc.train);
  if (rc.train.adapt_span_loss > 0 && !rc.model.adapt_span)
    t.fail("adapt_span_loss", "needs model.adapt_span: true (there are no spans to train)");
  if (rc.train.target_accuracy > 0 && !(rc.data.labels && rc.train.eval_every > 0))
    t.fail("target_accuracy", "needs labelled data (data.labels: true) and periodic evaluations (train.eval_every > 0)");
  t.finish();
  top.finish();
  return rc;
}

std::string run_config_yaml(const RunConfig& c) {
  YAML::Emitter e;
  const ModelConfig& m = c.model;
  const TrainConfig& t = c.train;
  e << YAML::BeginMap;
  e << YAML::Key << "model" << YAML::Value << YAML::BeginMap;
  e << YAML::Key << "type" << YAML::Value << m.type;
  for (const ModelField& f : model_fields())
    if (!f.omitted_at_default || !at_default(f, m))
      std::visit([&](auto member) { e << YAML::Key << f.key << YAML::Value << m.*member; }, f.member);
  e << YAML::EndMap;
  e << YAML::Key << "data" << YAML::Value << YAML::BeginMap;
  e << YAML::Key << "format" << YAML::Value << c.data.format << YAML::Key << "train" << YAML::Value << c.data.train;
  e << YAML::Key << "valid" << YAML::Value << c.data.valid;
  if (!c.data.test.empty()) e << YAML::Key << "test" << YAML::Value << c.data.test;
  if (c.data.format == "text") e << YAML::Key << "vocab" << YAML::Value << c.data.vocab;
  if (!c.data.tokenizer.empty()) e << YAML::Key << "tokenizer" << YAML::Value << c.data.tokenizer;
  if (c.data.format != "text" && !c.data.tokenizer_model.empty())
    e << YAML::Key << "tokenizer_model" << YAML::Value << c.data.tokenizer_model;
  if (c.data.labels)
    e << YAML::Key << "labels" << YAML::Value << true << YAML::Key << "ignore_label" << YAML::Value << c.data.ignore_label;
  e << YAML::EndMap;
  e << YAML::Key << "train" << YAML::Value << YAML::BeginMap;
  e << YAML::Key << "batch_size" << YAML::Value << t.batch_size << YAML::Key << "bptt" << YAML::Value << t.bptt;
  if (t.grad_accum != 1) e << YAML::Key << "grad_accum" << YAML::Value << t.grad_accum;
  if (t.recompute) e << YAML::Key << "recompute" << YAML::Value << true;
  e << YAML::Key << "steps" << YAML::Value << t.steps << YAML::Key << "lr" << YAML::Value << t.lr;
  if (t.target_accuracy > 0) e << YAML::Key << "target_accuracy" << YAML::Value << t.target_accuracy;
  e << YAML::Key << "warmup" << YAML::Value << t.warmup << YAML::Key << "schedule" << YAML::Value << t.schedule;
  e << YAML::Key << "min_lr" << YAML::Value << t.min_lr << YAML::Key << "weight_decay" << YAML::Value << t.weight_decay;
  e << YAML::Key << "beta1" << YAML::Value << t.beta1 << YAML::Key << "beta2" << YAML::Value << t.beta2;
  e << YAML::Key << "eps" << YAML::Value << t.eps << YAML::Key << "clip" << YAML::Value << t.clip;
  if (t.adapt_span_loss > 0) e << YAML::Key << "adapt_span_loss" << YAML::Value << t.adapt_span_loss;
  e << YAML::Key << "on_nonfinite" << YAML::Value << t.on_nonfinite << YAML::Key << "skip_limit" << YAML::Value
    << t.skip_limit;
  e << YAML::Key << "detach" << YAML::Value << t.detach << YAML::Key << "seed" << YAML::Value << t.seed;
  e << YAML::Key << "threads" << YAML::Value << t.threads << YAML::Key << "device" << YAML::Value << t.device;
  e << YAML::Key << "eval_every" << YAML::Value << t.eval_every;
  e << YAML::Key << "eval_batch_size" << YAML::Value << t.eval_batch_size << YAML::Key << "eval_tokens" << YAML::Value
    << t.eval_tokens;
  e << YAML::Key << "log_every" << YAML::Value << t.log_every << YAML::Key << "checkpoint_every" << YAML::Value
    << t.checkpoint_every;
  e << YAML::Key << "keep_last" << YAML::Value << t.keep_last << YAML::Key << "out_dir" << YAML::Value << t.out_dir;
  if (t.init != "gpt2") e << YAML::Key << "init" << YAML::Value << t.init;
  if (!t.init_from.empty()) e << YAML::Key << "init_from" << YAML::Value << t.init_from;
  e << YAML::Key << "probe_every" << YAML::Value << t.probe_every;
  e << YAML::Key << "sample_tokens" << YAML::Value << t.sample_tokens << YAML::Key << "sample_prompt" << YAML::Value
    << YAML::DoubleQuoted << t.sample_prompt;
  e << YAML::EndMap << YAML::EndMap;
  return std::string(e.c_str()) + "\n";
}

}  // namespace fbt
