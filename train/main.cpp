// fbt: the command-line front end. Each subcommand lives in its own cmd_*.cpp; errors from any
// of them end here as one line on stderr and a non-zero exit.
#include <fmt/core.h>

#include <CLI/CLI.hpp>

#include "train/commands.hpp"

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

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    if (version) {
      fmt::print("fbt {} (backends: cpu)\n", FBT_VERSION);
      return 0;
    }
    if (forward->parsed()) return fbt::cli::run_forward(fwd);
    fmt::print("{}", app.help());
    return 0;
  } catch (const std::exception& e) {
    fmt::print(stderr, "fbt: error: {}\n", e.what());
    return 1;
  }
}
