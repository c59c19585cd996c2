// `fbt eval CONFIG --checkpoint RUN`: the mean loss (and, on labelled data, the accuracy) of a
// checkpoint over a whole split: a line to read and a JSON line for scripts.
#include <fmt/core.h>

#include <memory>
#include <nlohmann/json.hpp>

#include "cli/commands.hpp"
#include "cli/common.hpp"
#include "train/checkpoint.hpp"
#include "train/trainer.hpp"
#include "train/config.hpp"
#include "train/evaluate.hpp"

namespace fbt::cli {

namespace {

struct EvalArgs {
  std::string config, checkpoint, split = "valid";
  std::vector<std::string> overrides;
};

void run_eval(const EvalArgs& a) {
  const RunConfig cfg = load_run_config(a.config, a.overrides);
  const std::string& path = cfg.data.split(a.split);
  set_threads(cfg.train.threads);
  auto model = load_model(a.checkpoint);
  model->to(parse_device(cfg.train.device));
  if (model->config().num_tokens != cfg.model.num_tokens)
    throw std::runtime_error(a.checkpoint + ": model vocabulary differs from the config's");
  Corpus corpus(path, cfg.data, cfg.model.num_tokens);
  const std::unique_ptr<Tokenizer> tokenizer = run_tokenizer(cfg);
  const EvalResult r = evaluate(*model, corpus, cfg.train.eval_streams(), cfg.train.bptt, 0, true, tokenizer.get());
  const std::string acc = r.labelled ? fmt::format(" | accuracy {:.4f}", r.accuracy)
                          : r.bytes  ? fmt::format(" | bpb {:.4f}", r.bpb())
                                     : "";
  fmt::print("\r\x1b[K{} ({}): loss {:.4f} nats | bpc {:.4f} | ppl {:.3f}{} | {} tokens\n", a.split, path, r.loss, r.bpc(),
             r.perplexity(), acc, r.tokens);
  nlohmann::json j = {{"split", a.split},   {"path", path},     {"loss", r.loss},
                      {"tokens", r.tokens}, {"model", model->config().type}, {"parameters", model->params().numel()}};
  if (r.labelled) j["accuracy"] = r.accuracy;
  if (r.bytes) j["bpb"] = r.bpb(), j["bytes"] = r.bytes;
  fmt::print("{}\n", j.dump());  // for scripts: one JSON line
}

}  // namespace

void add_eval(CLI::App& app) {
  auto a = std::make_shared<EvalArgs>();
  CLI::App* sub = app.add_subcommand("eval", "evaluate a checkpoint on a split");
  sub->add_option("config", a->config, "run config (data: and train.batch_size, bptt)")->required()->check(CLI::ExistingFile);
  sub->add_option("--checkpoint", a->checkpoint, "checkpoint directory, run directory or weights file")->required();
  sub->add_option("--split", a->split, "valid | test | train");
  sub->add_option("--set", a->overrides, "override a config key");
  sub->callback([a] { run_eval(*a); });
}

}  // namespace fbt::cli
