// A run's configuration: the model:, data: and train: sections of a YAML file, parsed once into
// plain structs with defaults and validation (docs/CONFIG.md documents every key).
#pragma once
#include <string>
#include <vector>

#include "data/tokens.hpp"
#include "models/config.hpp"

namespace YAML {
class Node;
}

namespace fbt {

// The format (bytes | u16 | u32 | llmc | text, and for text the vocabulary and labels:
// data/tokens.hpp, CorpusFormat) and where the splits are.
struct DataConfig : CorpusFormat {
  std::string train, valid, test;  // a path or a glob of shards; test optional
  // How text maps to the ids (data/tokenizer.hpp): bytes for format bytes, words (data.vocab)
  // for format text; for u16/u32/llmc what the user names, "" if none.
  std::string tokenizer, tokenizer_model;

  // The path of a split by name ("train", "valid", "test"); an error names a bad or unset one.
  const std::string& split(const std::string& name) const;
};

struct TrainConfig {
  int64_t batch_size = 16;   // streams, over all processes of a data-parallel run
  int64_t grad_accum = 1;    // micro-batches per step, of batch_size / grad_accum streams each
  bool recompute = false;    // keep each window's outputs only, recompute the rest in backward
  int64_t bptt = 64;         // tokens per stream per step
  int64_t steps = 1000;
  double target_accuracy = 0;  // > 0: the run ends at the first periodic evaluation reaching this valid accuracy
  double lr = 1e-3;
  int64_t warmup = 100;
  std::string schedule = "cosine";  // constant | cosine
  double min_lr = 1e-4;
  double weight_decay = 0.01;
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  double clip = 1.0;         // global grad norm; 0 disables
  double adapt_span_loss = 0;  // with model.adapt_span: the span term's weight (MODEL.md)
  std::string on_nonfinite = "stop";  // stop | skip: a step whose loss or gradient norm is not finite
  int64_t skip_limit = 10;            // with skip: stop after this many skipped steps in a row
  std::string detach = "none";
  uint64_t seed = 1234;
  int64_t threads = 0;       // 0: all cores
  std::string device = "cpu";  // cpu | cuda: where the model trains, evaluates and samples
  int64_t eval_every = 200;  // 0: only at the end
  int64_t eval_batch_size = 0;  // 0: batch_size
  int64_t eval_tokens = 0;      // periodic evals: 0 = the whole split, else about N tokens; the final one is whole
  int64_t log_every = 10;
  int64_t checkpoint_every = 500;  // 0: only at the end
  int64_t keep_last = 3;
  std::string out_dir = "runs/default";
  std::string init = "gpt2";       // how a fresh run draws its weights: gpt2 | torch (Model::init)
  std::string init_from;           // weights a fresh run starts from (fine-tuning): a file or a run/checkpoint dir
  int64_t probe_every = 0;         // research probe (gradient norm by lag, layer mix) every N steps; 0: off
  int64_t sample_tokens = 200;     // sample printed at the end (0: none)
  std::string sample_prompt = "";

  int64_t eval_streams() const { return eval_batch_size ? eval_batch_size : batch_size; }
};

struct RunConfig {
  ModelConfig model;
  DataConfig data;
  TrainConfig train;
  std::string source;  // the file it came from
};

// Loads `path`, applies "--set section.key=value" overrides, validates. Errors name file, line, key.
// require_data false: a config without a data: section is accepted (fbt bench draws random tokens).
RunConfig load_run_config(const std::string& path, const std::vector<std::string>& overrides = {},
                          bool require_data = true);
// The effective config as YAML (written to out_dir/config.yaml).
std::string run_config_yaml(const RunConfig& c);

// The optimizer settings' ranges, one rule for the config reader (which adds file and line) and
// the Python TrainLoop: the first setting out of range as {key, what is wrong}, or empty strings
// when all hold. NaN is out of every range.
struct OptimizerSettings {
  double lr, min_lr, weight_decay, beta1, beta2, eps, clip;
  int64_t warmup;
};
std::pair<std::string, std::string> optimizer_setting_error(const OptimizerSettings& s);

}  // namespace fbt
