// The seed's first snippet: build a model and get logits for a batch of tokens.
#include <fbt/fbt.hpp>
#include <cstdio>

int main() {
  fbt::FeedbackTransformer model({.num_tokens = 20000, .dim = 512, .depth = 6, .heads = 8, .dim_head = 64,
                                  .seq_len = 2, .mem_len = 256, .attn_dropout = 0.1f, .ff_dropout = 0.1f});
  const int64_t B = 2, T = 32;
  std::vector<int32_t> x(B * T);
  for (size_t i = 0; i < x.size(); ++i) x[i] = int32_t(i * 7919 % 20000);

  fbt::NoGradScope no_grad;                      // inference: record nothing (dropout is off outside training)
  fbt::ForwardOutput out = model.forward(x.data(), B, T);
  std::printf("logits %s, memory %s\n", out.logits.shape().str().c_str(), out.memory.shape.str().c_str());
  return out.logits.shape() == fbt::Shape{B, T, 20000} ? 0 : 1;
}
