// `fbt plot RUN_OR_JSONL...`: PNG charts of a run's metrics and of grads files (cli/plot.hpp).
#include <fmt/core.h>

#include <memory>

#include "cli/commands.hpp"
#include "cli/plot.hpp"

namespace fbt::cli {

void add_plot(CLI::App& app) {
  auto paths = std::make_shared<std::pair<std::vector<std::string>, std::string>>();  // inputs, out_dir
  CLI::App* sub = app.add_subcommand("plot", "render PNG charts of run directories or JSONL files (gnuplot)");
  sub->add_option("input", paths->first, "run directories (their *.jsonl) or .jsonl files; several share the charts")
      ->required();
  sub->add_option("--out-dir", paths->second, "where the PNGs go (default: beside the first input)");
  sub->callback([paths] {
    for (const std::string& png : plot_jsonl(paths->first, paths->second)) fmt::print("wrote {}\n", png);
  });
}

}  // namespace fbt::cli
