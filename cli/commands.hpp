// The subcommands of the fbt binary, one file each (cli/cmd_*.cpp): each registers its flags on
// the app and runs when it is chosen. main.cpp adds them all.
#pragma once
#include <CLI/CLI.hpp>

namespace fbt::cli {

void add_train(CLI::App& app);    // cmd_train.cpp
void add_eval(CLI::App& app);     // cmd_eval.cpp
void add_sample(CLI::App& app);   // cmd_sample.cpp
void add_forward(CLI::App& app);  // cmd_forward.cpp
void add_bench(CLI::App& app);    // cmd_bench.cpp
void add_grads(CLI::App& app);    // cmd_grads.cpp
void add_plot(CLI::App& app);     // cmd_plot.cpp
void add_compare(CLI::App& app);  // cmd_compare.cpp
void add_spans(CLI::App& app);    // cmd_spans.cpp
void add_prepare_bytes(CLI::App& app);
void add_prepare(CLI::App& app);  // cmd_prepare.cpp
void add_prepare_algorithmic(CLI::App& app);  // cmd_prepare.cpp

}  // namespace fbt::cli
