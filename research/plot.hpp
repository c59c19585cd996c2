// PNG charts of a run (metrics.jsonl: loss, bpc, probes) and of `fbt grads` JSONL files (gradient
// by lag, Jacobian norms, truncation bias), drawn by gnuplot (Debian's gnuplot-nox).
#pragma once
#include <string>
#include <vector>

namespace fbt {

// input: a run directory (every *.jsonl in it) or one .jsonl file; out_dir: where the PNGs go
// (empty: beside the input). Returns the charts written. A line that is not JSON, an input with
// nothing to plot, or a gnuplot failure is an error naming the file and line.
std::vector<std::string> plot_jsonl(const std::string& input, const std::string& out_dir);

}  // namespace fbt
