// `fbt plot RUN_OR_JSONL`: PNG charts of a run's metrics and of grads files (research/plot.hpp).
#include <fmt/core.h>

#include <memory>

#include "cli/commands.hpp"
#include "research/plot.hpp"

namespace fbt::cli {

void add_plot(CLI::App& app) {
  auto paths = std::make_shared<std::pair<std::string, std::string>>();  // input, out_dir
  CLI::App* sub = app.add_subcommand("plot", "render PNG charts of a run directory or a JSONL file (gnuplot)");
  sub->add_option("input", paths->first, "run directory (its *.jsonl) or one .jsonl file")->required();
  sub->add_option("--out-dir", paths->second, "where the PNGs go (default: beside the input)");
  sub->callback([paths] {
    for (const std::string& png : plot_jsonl(paths->first, paths->second)) fmt::print("wrote {}\n", png);
  });
}

}  // namespace fbt::cli
