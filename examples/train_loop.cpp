// A custom training loop on your own data: bytes of a string, 4 streams, TBPTT with the memory
// carried between steps, AdamW with warmup and cosine decay; writes a checkpoint fbt sample reads.
#include <fbt/fbt.hpp>
#include <cstdio>
#include <string>

int main(int argc, char** argv) {
  const std::string out = argc > 1 ? argv[1] : "my_model.safetensors";
  std::string text;
  for (int i = 0; i < 200; ++i) text += "In the beginning God created the heaven and the earth. ";

  fbt::FeedbackTransformer model({.num_tokens = 256, .dim = 64, .depth = 2, .heads = 4, .dim_head = 16, .mem_len = 32});
  model.init(/*seed=*/1);
  fbt::LoopConfig cfg;
  cfg.lr = 3e-3, cfg.warmup = 10, cfg.total_steps = 60, cfg.cosine = true, cfg.min_lr = 3e-4;
  fbt::TrainLoop loop(model, cfg);

  const int64_t B = 4, T = 32, stream = int64_t(text.size()) / B;
  std::vector<int32_t> x(B * T), y(B * T);
  double first = 0, last = 0;
  for (int64_t step = 0, pos = 0; step < cfg.total_steps; ++step, pos += T) {
    if (pos + T + 1 > stream) pos = 0, loop.reset_memory();  // a new pass: fresh memories
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < T; ++t) {
        x[b * T + t] = (unsigned char)text[b * stream + pos + t];
        y[b * T + t] = (unsigned char)text[b * stream + pos + t + 1];
      }
    fbt::StepStats s = loop.step(x.data(), y.data(), B, T);
    if (step == 0) first = s.loss;
    last = s.loss;
    if (step % 20 == 0) std::printf("step %3lld  loss %.4f  lr %.2e\n", (long long)step, s.loss, s.lr);
  }
  fbt::save_model(model, out);
  std::printf("loss %.3f -> %.3f, wrote %s\n", first, last, out.c_str());
  return last < first ? 0 : 1;
}
