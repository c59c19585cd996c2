// PNG charts of runs (metrics.jsonl: loss, bpc, accuracy, probes, adaptive spans) and of `fbt grads` JSONL files (gradient
// by lag, Jacobian norms, truncation bias), drawn by gnuplot (Debian's gnuplot-nox).
#pragma once
#include <string>
#include <vector>

namespace fbt {

// inputs: run directories (every *.jsonl in each) or .jsonl files; several runs share each chart
// (accuracy: a line per run). out_dir: where the PNGs go (empty: beside the first input). Returns
// the charts written. A line that is not JSON, inputs with nothing to plot, or a gnuplot failure
// is an error naming the file and line.
std::vector<std::string> plot_jsonl(const std::vector<std::string>& inputs, const std::string& out_dir);

// The gnuplot script plot_jsonl runs for these .jsonl files, run in data_dir (where it writes the
// charts' data files) and drawing into data_dir/..; charts gets the PNGs' names. Every string
// from the files reaches it as an inert single-quoted literal (tests/gnuplot_inert.hpp checks a
// script; fuzz/fuzz_plot.cpp fuzzes the two together). Errors as plot_jsonl's.
std::string gnuplot_script(const std::vector<std::string>& jsonl_files, const std::string& data_dir,
                           std::vector<std::string>& charts);

}  // namespace fbt
