// Load a checkpoint (a weights file, a checkpoint directory or a run directory) and sample.
#include <fbt/fbt.hpp>
#include <cstdio>
#include <string>

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: sample CHECKPOINT [PROMPT]\n");
    return 2;
  }
  auto model = fbt::load_model(argv[1]);
  const std::string prompt = argc > 2 ? argv[2] : "In the";
  std::vector<int32_t> ids(prompt.begin(), prompt.end());
  fbt::SampleOptions opt;
  opt.tokens = 60, opt.temperature = 0.8f, opt.top_k = 20, opt.seed = 7;
  std::printf("%s", prompt.c_str());
  auto text = fbt::generate(*model, ids, opt, [](int32_t t) { std::putchar(char(t)); });
  std::printf("\n");
  return text.size() == 60 ? 0 : 1;
}
