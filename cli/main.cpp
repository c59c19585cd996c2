// fbt: the command-line front end. Each subcommand lives in its own cmd_*.cpp; errors from any
// of them end here as one line on stderr and a non-zero exit.
#include <fmt/core.h>

#include <CLI/CLI.hpp>

#include "backend/device.hpp"
#include "backend/cuda/kernels.hpp"
#include "cli/commands.hpp"

namespace {
// A whole-number flag of at least `lo` (CLI11's PositiveNumber would answer 0 with "not in
// range 0.000000 to 1.797e308").
CLI::Validator at_least(int64_t lo) {
  return CLI::Validator(
      [lo](std::string& s) -> std::string {
        int64_t v = 0;
        if (CLI::detail::lexical_cast(s, v) && v >= lo) return "";
        return "must be a whole number >= " + std::to_string(lo) + ", got " + s;
      },
      "INT>=" + std::to_string(lo));
}
}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"fbt: train and study the Feedback Transformer"};
  app.require_subcommand(0, 1);
  bool version = false;
  app.add_flag("--version", version, "print the version and the compiled-in backends");

  fbt::cli::ForwardArgs fwd;
  auto* forward = app.add_subcommand("forward", "run one forward (and backward) call on a batch file");
  forward->add_option("--config", fwd.config, "YAML file with a model: section")->required()->check(CLI::ExistingFile);
  forward->add_option("--weights", fwd.weights, "model weights (safetensors)")->required()->check(CLI::ExistingFile);
  forward->add_option("--batch", fwd.batch, "inputs/targets [B,T] (+ memory, context) (safetensors)")
      ->required()
      ->check(CLI::ExistingFile);
  forward->add_option("--out", fwd.out, "output safetensors: logits, loss, memory [, grad.*]")->required();
  forward->add_flag("--grads", fwd.grads, "also write grad.<name> for every parameter");
  forward->add_option("--detach", fwd.detach, "detachment policy: none | all | every:N | horizon:N");
  forward->add_option("--device", fwd.device, "cpu | cuda")->check(CLI::IsMember({"cpu", "cuda"}));

  fbt::cli::TrainArgs tr;
  auto* train = app.add_subcommand("train", "train a model from a YAML config");
  train->add_option("config", tr.config, "run config (model:, data:, train:)")->required()->check(CLI::ExistingFile);
  train->add_option("--set", tr.overrides, "override a key, e.g. --set train.lr=1e-3 (repeatable)");
  train->add_flag("--resume", tr.resume, "continue from the newest complete checkpoint in out_dir");
  train->add_option("--stop-at", tr.stop_at, "end this session after step N with a checkpoint (resume later)")
      ->check(at_least(1));

  fbt::cli::EvalArgs ev;
  auto* eval = app.add_subcommand("eval", "evaluate a checkpoint on a split");
  eval->add_option("config", ev.config, "run config (data: and train.batch_size, bptt)")->required()->check(CLI::ExistingFile);
  eval->add_option("--checkpoint", ev.checkpoint, "checkpoint directory, run directory or weights file")->required();
  eval->add_option("--split", ev.split, "valid | test | train");
  eval->add_option("--set", ev.overrides, "override a config key");

  fbt::cli::SampleArgs sa;
  auto* sample = app.add_subcommand("sample", "generate text from a checkpoint");
  sample->add_option("--checkpoint", sa.checkpoint, "checkpoint directory, run directory or weights file")->required();
  sample->add_option("--prompt", sa.prompt, "text to start from");
  sample->add_option("--tokens", sa.tokens, "number of new tokens")->check(at_least(0));
  sample->add_option("--temperature", sa.temperature, "0 = greedy")->check(CLI::NonNegativeNumber);
  sample->add_option("--top-k", sa.top_k, "keep the k most likely tokens (0 = all)")->check(at_least(0));
  sample->add_option("--seed", sa.seed, "random seed");
  sample->add_option("--device", sa.device, "cpu | cuda")->check(CLI::IsMember({"cpu", "cuda"}));

  fbt::cli::BenchArgs be;
  auto* bench = app.add_subcommand("bench", "time training steps on random tokens; one JSON line");
  bench->add_option("--config", be.config, "run config (model:, train.batch_size, bptt, threads)")
      ->required()
      ->check(CLI::ExistingFile);
  bench->add_option("--steps", be.steps, "timed steps after one warm-up step (the median is reported)")->check(at_least(1));
  bench->add_option("--set", be.overrides, "override a config key");
  bench->add_flag("--profile", be.profile,
                  "then time as many steps again op by op (forward, backward, optimizer): a table on stderr, "
                  "\"profile\" rows in the JSON");

  fbt::cli::GradsArgs ga;
  auto* grads = app.add_subcommand("grads", "measure gradient flow through the memory; JSONL out");
  grads->add_option("--config", ga.config, "model config (with --weights) or run config (with --checkpoint)")
      ->required()
      ->check(CLI::ExistingFile);
  grads->add_option("--weights", ga.weights, "weights (safetensors), with --batch")->check(CLI::ExistingFile);
  grads->add_option("--batch", ga.batch, "inputs/targets [B,T] (+ memory, context)")->check(CLI::ExistingFile);
  grads->add_option("--checkpoint", ga.checkpoint, "checkpoint/run directory or weights file, with --split");
  grads->add_option("--split", ga.split, "valid | test | train (with --checkpoint)");
  grads->add_option("--batches", ga.batches, "consecutive batches of the split")->check(at_least(1));
  grads->add_option("--detach", ga.detach, "policy for lag and jacobian measurements");
  grads->add_option("--policies", ga.policies, "policies compared with none for the truncation bias")->delimiter(',');
  grads->add_option("--measure", ga.measures, "lag, bias, jacobian (default: all)")->delimiter(',');
  grads->add_option("--probes", ga.probes, "random probes for the Jacobian estimate")->check(at_least(1));
  grads->add_flag("--exact-jacobian", ga.exact_jacobian, "probe with the D unit vectors: the exact norm");
  grads->add_flag("--per-row", ga.per_row, "also write every batch row's value");
  grads->add_option("--seed", ga.seed, "probe seed");
  grads->add_option("--device", ga.device, "cpu | cuda (default: the run config's train.device, else cpu)")
      ->check(CLI::IsMember({"cpu", "cuda"}));
  grads->add_option("--out", ga.out, "output JSONL")->required();

  fbt::cli::PlotArgs pa;
  auto* plot = app.add_subcommand("plot", "render PNG charts of a run directory or a JSONL file (gnuplot)");
  plot->add_option("input", pa.input, "run directory (its *.jsonl) or one .jsonl file")->required();
  plot->add_option("--out-dir", pa.out_dir, "where the PNGs go (default: beside the input)");

  std::string prep_in, prep_out;
  auto* prep = app.add_subcommand("prepare-bytes", "split a text file into train/valid/test.bin (90/5/5), byte tokens");
  prep->add_option("input", prep_in)->required()->check(CLI::ExistingFile);
  prep->add_option("out_dir", prep_out)->required();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    if (version) {
      // What the run time finds, so the emulated-device test build reports its device too.
      std::string why;
      const bool usable = fbt::device_available(fbt::Device::CUDA, &why);
#ifdef FBT_HAVE_CUDA
      const char* built = "cuda built for sm_90";
#else
      const char* built = "cuda";
#endif
      if (usable) fmt::print("fbt {} (backends: cpu, {}; device: {})\n", FBT_VERSION, built, fbt::cuda::device_name());
      else fmt::print("fbt {} (backends: cpu; {}: {})\n", FBT_VERSION, built, why);
      return 0;
    }
    if (forward->parsed()) return fbt::cli::run_forward(fwd);
    if (train->parsed()) return fbt::cli::run_train(tr);
    if (eval->parsed()) return fbt::cli::run_eval(ev);
    if (sample->parsed()) return fbt::cli::run_sample(sa);
    if (bench->parsed()) return fbt::cli::run_bench(be);
    if (grads->parsed()) return fbt::cli::run_grads(ga);
    if (plot->parsed()) return fbt::cli::run_plot(pa);
    if (prep->parsed()) return fbt::cli::run_prepare_bytes(prep_in, prep_out);
    fmt::print("{}", app.help());
    return 0;
  } catch (const std::exception& e) {
    fmt::print(stderr, "fbt: error: {}\n", e.what());
    return 1;
  }
}
