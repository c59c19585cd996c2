// `fbt sample --checkpoint RUN --prompt TEXT`: text from a model, through the tokenizer its run
// recorded (bytes, words or SentencePiece).
#include <memory>

#include "cli/commands.hpp"
#include "cli/common.hpp"
#include "train/checkpoint.hpp"

namespace fbt::cli {

namespace {

struct SampleArgs {
  std::string checkpoint, prompt = "\n";
  SampleOptions options;
  std::string device = "cpu";
  bool raw = false;
};

void run_sample(const SampleArgs& a) {
  auto model = load_model(a.checkpoint);
  const std::unique_ptr<Tokenizer> tokenizer = load_run_tokenizer(a.checkpoint);
  if (!tokenizer)
    throw std::runtime_error(a.checkpoint + ": records no tokenizer (trained on id files without data.tokenizer), so "
                             "text cannot be turned into its ids");
  if (a.prompt.empty()) throw std::invalid_argument("--prompt must not be empty");
  model->to(parse_device(a.device));
  print_sample(*model, *tokenizer, a.prompt, a.options, a.raw);
}

}  // namespace

void add_sample(CLI::App& app) {
  auto a = std::make_shared<SampleArgs>();
  SampleOptions& o = a->options;
  CLI::App* sub = app.add_subcommand("sample", "generate text from a checkpoint");
  sub->add_option("--checkpoint", a->checkpoint, "checkpoint directory, run directory or weights file")->required();
  sub->add_option("--prompt", a->prompt, "text to start from");
  sub->add_option("--tokens", o.tokens, "number of new tokens")->check(at_least(0));
  sub->add_option("--temperature", o.temperature, "0 = greedy")->check(CLI::NonNegativeNumber);
  sub->add_option("--top-k", o.top_k, "keep the k most likely tokens (0 = all)")->check(at_least(0));
  sub->add_option("--seed", o.seed, "random seed");
  sub->add_flag("--raw", a->raw, "write the sampled bytes unchanged (default: valid UTF-8, U+FFFD for invalid bytes)");
  sub->add_option("--device", a->device, "cpu | cuda")->check(CLI::IsMember({"cpu", "cuda"}));
  sub->callback([a] { run_sample(*a); });
}

}  // namespace fbt::cli
