// `fbt train`, `fbt eval`, `fbt sample` and `fbt prepare-bytes`.
#include <fmt/core.h>

#include <filesystem>
#include <fstream>
#include <omp.h>

#include "util/safetensors.hpp"
#include "models/weights.hpp"
#include "cli/commands.hpp"
#include "train/sample.hpp"
#include "research/research.hpp"
#include "train/checkpoint.hpp"
#include "train/trainer.hpp"

namespace fs = std::filesystem;

namespace fbt::cli {

int run_train(const TrainArgs& a) {
  RunConfig cfg = load_run_config(a.config, a.overrides);
  Trainer trainer(cfg);
  if (cfg.train.probe_every) {
    const DetachPolicy policy = loop_config(cfg).detach;
    trainer.set_probe([policy](FeedbackTransformer& model, const CallBatch& batch, int64_t step) {
      return probe_metrics(model, batch, policy, step);
    });
  }
  if (!trainer.run(a.resume, a.stop_at)) return 0;
  const TrainConfig& t = cfg.train;
  if (t.sample_tokens > 0 && cfg.model.num_tokens == 256) {
    fmt::print("sample ({} tokens, temperature 0.8, top-k 200):\n", t.sample_tokens);
    print_sample(trainer.model(), t.sample_prompt.empty() ? "\n" : t.sample_prompt, {t.sample_tokens, 0.8f, 200, t.seed});
  }
  return 0;
}


int run_eval(const EvalArgs& a) {
  RunConfig cfg = load_run_config(a.config, a.overrides);
  const std::string& path = cfg.data.split(a.split);
  if (cfg.train.threads > 0) omp_set_num_threads(int(cfg.train.threads));
  auto model = load_model(a.checkpoint);
  model->to(parse_device(cfg.train.device));
  if (model->config().num_tokens != cfg.model.num_tokens)
    throw std::runtime_error(a.checkpoint + ": model vocabulary differs from the config's");
  Corpus corpus(path, cfg.data.format, cfg.model.num_tokens);
  EvalResult r = evaluate(*model, corpus, cfg.train.eval_streams(), cfg.train.bptt, 0, true);
  fmt::print("\r\x1b[K{} ({}): loss {:.4f} nats | bpc {:.4f} | ppl {:.3f} | {} tokens\n", a.split, path, r.loss, r.bpc(),
             r.perplexity(), r.tokens);
  return 0;
}

int run_sample(const SampleArgs& a) {
  auto model = load_model(a.checkpoint);
  if (model->config().num_tokens != 256)
    throw std::runtime_error(a.checkpoint + ": text prompts need a byte-level model (num_tokens 256)");
  if (a.prompt.empty()) throw std::invalid_argument("--prompt must not be empty");
  model->to(parse_device(a.device));
  print_sample(*model, a.prompt, {a.tokens, a.temperature, a.top_k, a.seed});
  return 0;
}

int run_prepare_bytes(const std::string& input, const std::string& out_dir) {
  std::ifstream in(input, std::ios::binary);
  if (!in) throw std::runtime_error(input + ": cannot open");
  std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (data.size() < 1000) throw std::runtime_error(input + ": only " + std::to_string(data.size()) + " bytes, too small to split");
  fs::create_directories(out_dir);
  const size_t n_train = data.size() * 90 / 100, n_valid = data.size() * 5 / 100;
  write_file_atomic((fs::path(out_dir) / "train.bin").string(), data.data(), n_train);
  write_file_atomic((fs::path(out_dir) / "valid.bin").string(), data.data() + n_train, n_valid);
  write_file_atomic((fs::path(out_dir) / "test.bin").string(), data.data() + n_train + n_valid, data.size() - n_train - n_valid);
  fmt::print("{}: {} bytes -> train {} / valid {} / test {} in {}\n", input, data.size(), n_train, n_valid,
             data.size() - n_train - n_valid, out_dir);
  return 0;
}

void print_sample(FeedbackTransformer& model, const std::string& prompt, const SampleOptions& options) {
  std::vector<int32_t> ids;
  for (unsigned char ch : prompt) ids.push_back(ch);
  std::fputs(prompt.c_str(), stdout);
  generate(model, ids, options, [](int32_t t) {
    std::putchar(char(t));
    std::fflush(stdout);
  });
  std::putchar('\n');
}

}  // namespace fbt::cli
