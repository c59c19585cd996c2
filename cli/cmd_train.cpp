// `fbt train CONFIG`: a run from a YAML config (train/trainer.hpp), with the research probe when
// train.probe_every asks for it and a sample at the end.
#include <fmt/core.h>

#include <memory>

#include "backend/comm.hpp"
#include "cli/commands.hpp"
#include "cli/common.hpp"
#include "research/research.hpp"
#include "train/trainer.hpp"

namespace fbt::cli {

namespace {

struct TrainArgs {
  std::string config;
  std::vector<std::string> overrides;
  bool resume = false;
  int64_t stop_at = 0;
};

void run_train(const TrainArgs& a) {
  const RunConfig cfg = load_run_config(a.config, a.overrides);
  Trainer trainer(cfg);
  std::string again = shell_word(program()) + " train " + shell_word(a.config);  // the command that was run, resumed
  for (const std::string& o : a.overrides) again += " --set " + shell_word(o);
  trainer.set_resume_command(again + " --resume");
  if (cfg.train.probe_every) {
    const DetachPolicy policy = loop_config(cfg).detach;
    trainer.set_probe([policy](Model& model, const CallBatch& batch, int64_t step) {
      return probe_metrics(model, batch, policy, step);
    });
  }
  if (!trainer.run(a.resume, a.stop_at)) return;
  const TrainConfig& t = cfg.train;
  if (t.sample_tokens > 0 && trainer.tokenizer() && !cfg.data.labels && Comm::world().root()) {
    // A prompt the tokenizer can read: a newline for bytes and SentencePiece, the first word of the vocabulary else.
    const Tokenizer& tok = *trainer.tokenizer();
    const std::string prompt = !t.sample_prompt.empty() ? t.sample_prompt : tok.kind() == "words" ? tok.piece(0) : "\n";
    fmt::print("sample ({} tokens, temperature 0.8, top-k 200):\n", t.sample_tokens);
    print_sample(trainer.model(), tok, prompt, {t.sample_tokens, 0.8f, 200, t.seed});
  }
}

}  // namespace

void add_train(CLI::App& app) {
  auto a = std::make_shared<TrainArgs>();
  CLI::App* sub = app.add_subcommand("train", "train a model from a YAML config");
  sub->add_option("config", a->config, "run config (model:, data:, train:)")->required()->check(CLI::ExistingFile);
  sub->add_option("--set", a->overrides, "override a key, e.g. --set train.lr=1e-3 (repeatable)");
  sub->add_flag("--resume", a->resume, "continue from the newest complete checkpoint in out_dir");
  sub->add_option("--stop-at", a->stop_at, "end this session after step N with a checkpoint (resume later)")
      ->check(at_least(1));
  sub->callback([a] { run_train(*a); });
}

}  // namespace fbt::cli
