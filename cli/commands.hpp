// The subcommands of the fbt binary; main.cpp wires them to CLI11.
#pragma once
#include <string>
#include <vector>

#include "train/sample.hpp"

namespace fbt::cli {

struct ForwardArgs {
  std::string config, weights, batch, out, detach = "none", device = "cpu";
  bool grads = false;
};
int run_forward(const ForwardArgs& a);

}  // namespace fbt::cli

namespace fbt::cli {

struct TrainArgs {
  std::string config;
  std::vector<std::string> overrides;
  bool resume = false;
  int64_t stop_at = 0;
};
int run_train(const TrainArgs& a);

struct EvalArgs {
  std::string config, checkpoint, split = "valid";
  std::vector<std::string> overrides;
};
int run_eval(const EvalArgs& a);

struct SampleArgs {
  std::string checkpoint, prompt = "\n";
  int64_t tokens = 200, top_k = 200;
  float temperature = 0.8f;
  uint64_t seed = 1;
  std::string device = "cpu";
};
int run_sample(const SampleArgs& a);
// The prompt, then the model's continuation of it, on stdout as it is drawn (byte-level models).
void print_sample(FeedbackTransformer& model, const std::string& prompt, const SampleOptions& options);

// Splits a byte file into train/valid/test.bin (90/5/5) in out_dir.
int run_prepare_bytes(const std::string& input, const std::string& out_dir);

}  // namespace fbt::cli

namespace fbt::cli {

struct BenchArgs {
  std::string config;
  std::vector<std::string> overrides;
  int64_t steps = 10;
  bool profile = false;  // then as many steps again with op timers: a table on stderr, "profile" in the JSON
};
int run_bench(const BenchArgs& a);

}  // namespace fbt::cli

namespace fbt::cli {

struct GradsArgs {
  // Either one call from files (like `fbt forward`) ...
  std::string config, weights, batch;
  // ... or batches of a split read from a checkpoint's run.
  std::string checkpoint, split = "valid";
  int64_t batches = 4;
  std::string detach = "none";
  std::vector<std::string> policies{"none", "horizon:8", "horizon:32", "every:64", "all"};
  std::vector<std::string> measures{"lag", "bias", "jacobian"};
  int64_t probes = 16;
  bool exact_jacobian = false, per_row = false;
  uint64_t seed = 1;
  std::string out;
  std::string device;  // empty: the run config's train.device, else cpu
};
int run_grads(const GradsArgs& a);

struct PlotArgs {
  std::string input;    // a run directory or a .jsonl file
  std::string out_dir;  // default: beside the input
};
int run_plot(const PlotArgs& a);

}  // namespace fbt::cli
