#include "cli/common.hpp"

#include <algorithm>
#include <cstdio>
#include <stdexcept>
#include <vector>

#include "backend/threads.hpp"
#include "models/weights.hpp"
#include "util/safetensors.hpp"

namespace fbt::cli {

namespace {
std::string g_program = "fbt";
}  // namespace

void set_program(const char* argv0) {
  if (argv0 && *argv0) g_program = argv0;
}
const std::string& program() { return g_program; }

std::string shell_word(const std::string& word) {
  const bool plain = !word.empty() && word.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                                              "0123456789_./=:,+-@%") == std::string::npos;
  if (plain) return word;
  std::string q = "'";
  for (char ch : word) q += ch == '\'' ? std::string("'\\''") : std::string(1, ch);
  return q + "'";
}

CLI::Validator at_least(int64_t lo) {
  return CLI::Validator(
      [lo](std::string& s) -> std::string {
        int64_t v = 0;
        if (CLI::detail::lexical_cast(s, v) && v >= lo) return "";
        return "must be a whole number >= " + std::to_string(lo) + ", got " + s;
      },
      "INT>=" + std::to_string(lo));
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

void set_threads(int64_t threads) {
  if (threads > 0) threads::set_max(int(threads));
}

DetachPolicy detach_flag(const std::string& text, int64_t seq_len) {
  try {
    return DetachPolicy::parse(text, seq_len);
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(std::string("--detach: ") + e.what());
  }
}

std::unique_ptr<Model> model_with_weights(const ModelConfig& cfg, const std::string& weights,
                                                        const std::string& device) {
  auto model = make_model(cfg, /*initialize=*/false);  // the weights come next
  load_weights(*model, load_checked(weights), weights);
  model->to(parse_device(device));
  return model;
}

void print_sample(Model& model, const Tokenizer& tokenizer, const std::string& prompt, const SampleOptions& options,
                  bool raw) {
  const std::vector<int32_t> ids = tokenizer.encode(prompt, "--prompt");
  if (ids.empty()) throw std::invalid_argument("--prompt: no tokens in it for the " + tokenizer.kind() + " tokenizer");
  Utf8Stream out;
  auto emit = [&](const std::string& bytes) {
    const std::string text = raw ? bytes : out.push(bytes);
    std::fwrite(text.data(), 1, text.size(), stdout);
    std::fflush(stdout);
  };
  emit(prompt);
  SampleOptions o = options;
  o.vocab = tokenizer.size();  // ids past the tokenizer's never occur in training data
  generate(model, ids, o, [&](int32_t t) { emit(tokenizer.piece(t)); });
  if (!raw) emit(out.finish());
  std::putchar('\n');
}

}  // namespace fbt::cli
