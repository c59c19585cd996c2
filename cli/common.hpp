// What the subcommands share: flag checks, medians, thread count, the --detach flag, a model built from a
// config and a weights file, and printing a sample.
#pragma once
#include <CLI/CLI.hpp>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/tokenizer.hpp"
#include "models/model.hpp"
#include "train/sample.hpp"

namespace fbt::cli {

// A whole-number flag of at least `lo` (CLI11's PositiveNumber would answer 0 with "not in range
// 0.000000 to 1.797e308").
CLI::Validator at_least(int64_t lo);

// The path fbt was run by (argv[0], set by main), for messages that name a command to run next.
void set_program(const char* argv0);
const std::string& program();
// A word as a POSIX shell reads it back: as is when plain, else in single quotes.
std::string shell_word(const std::string& word);

// The median of some measurements (0 for none).
double median(std::vector<double> v);

// train.threads > 0 sets the OpenMP thread count; 0 keeps OpenMP's default.
void set_threads(int64_t threads);

// The --detach flag for a model with this window: errors name the flag.
DetachPolicy detach_flag(const std::string& text, int64_t seq_len);

// A model of config `cfg` with the weights of `weights` (checked against it), on `device`.
std::unique_ptr<Model> model_with_weights(const ModelConfig& cfg, const std::string& weights,
                                                        const std::string& device);

// The prompt, then the model's continuation of it, on stdout as it is drawn: the prompt encoded
// and the tokens decoded by the run's tokenizer; valid UTF-8 (U+FFFD for what is not) unless raw.
void print_sample(Model& model, const Tokenizer& tokenizer, const std::string& prompt, const SampleOptions& options,
                  bool raw = false);

}  // namespace fbt::cli
