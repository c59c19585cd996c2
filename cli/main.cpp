// fbt: the command-line front end. Each subcommand lives in its own cli/cmd_*.cpp and registers
// itself; errors from any of them end here as one line on stderr and a non-zero exit.
#include <fmt/core.h>

#include <csignal>

#include <CLI/CLI.hpp>

#include "backend/comm.hpp"
#include "backend/cuda/kernels.hpp"
#include "backend/device.hpp"
#include "cli/commands.hpp"
#include "cli/common.hpp"

namespace {

// The version and what the run time finds (the emulated-device test build reports its device too).
void print_version() {
  std::string why;
  const bool usable = fbt::device_available(fbt::Device::CUDA, &why);
#ifdef FBT_HAVE_CUDA
  const char* built = "cuda built for sm_90";
#else
  const char* built = "cuda";
#endif
  if (usable) fmt::print("fbt {} (backends: cpu, {}; device: {})\n", FBT_VERSION, built, fbt::cuda::device_name());
  else fmt::print("fbt {} (backends: cpu; {}: {})\n", FBT_VERSION, built, why);
  fmt::print("cpu vectors: {}\n", fbt::cpu_vector_isa());
  fmt::print("data-parallel: {}\n", fbt::Comm::describe());
}

}  // namespace

int main(int argc, char** argv) {
  // A write past a file-size limit (ulimit -f) then fails with EFBIG and is reported like a full
  // disk, instead of the signal killing fbt without a word.
  std::signal(SIGXFSZ, SIG_IGN);
  CLI::App app{"fbt: train and study the Feedback Transformer"};
  app.require_subcommand(0, 1);
  bool version = false;
  app.add_flag("--version", version, "print the version and the compiled-in backends");
  for (auto add : {fbt::cli::add_forward, fbt::cli::add_train, fbt::cli::add_eval, fbt::cli::add_sample,
                   fbt::cli::add_bench, fbt::cli::add_grads, fbt::cli::add_plot, fbt::cli::add_compare, fbt::cli::add_spans, fbt::cli::add_prepare, fbt::cli::add_prepare_bytes,
                   fbt::cli::add_prepare_algorithmic})
    add(app);
  try {
    fbt::cli::set_program(argv[0]);
    app.parse(argc, argv);  // runs the chosen subcommand
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const std::exception& e) {
    // In a data-parallel run one process's error ends them all (the others would wait forever).
    int ranks = 1, rank = 0;
    try {
      ranks = fbt::Comm::world().size(), rank = fbt::Comm::world().rank();
    } catch (const std::exception&) {
    }
    std::string msg = e.what();
    if (const auto* failed = dynamic_cast<const std::bad_alloc*>(&e))  // what to change (checkpoints on disk are intact)
      msg = fbt::out_of_memory_message(*failed);
    fmt::print(stderr, "fbt: error: {}{}\n", ranks > 1 ? fmt::format("process {} of {}: ", rank, ranks) : "", msg);
    if (ranks > 1) fbt::Comm::world().abort(1);
    return 1;
  }
  if (version) print_version();
  else if (app.get_subcommands().empty()) fmt::print("{}", app.help());
  return 0;
}
