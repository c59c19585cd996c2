// The seed's third snippet: cross_attend = true, every layer also attends to an encoded context.
#include <fbt/fbt.hpp>
#include <cstdio>

int main() {
  fbt::FeedbackTransformer model({.num_tokens = 256, .dim = 64, .depth = 2, .heads = 4, .dim_head = 16,
                                  .seq_len = 2, .mem_len = 16, .cross_attend = true});
  const int64_t B = 2, T = 8, Tc = 5;
  std::vector<int32_t> x(B * T, 65);
  std::vector<float> encoded(B * Tc * 64);
  for (size_t i = 0; i < encoded.size(); ++i) encoded[i] = float(i % 13) / 13.0f - 0.5f;

  fbt::NoGradScope no_grad;
  fbt::Var context = fbt::from_host(encoded, {B, Tc, 64});  // (B, Tc, D), e.g. an encoder's output
  fbt::ForwardOutput out = model.forward(x.data(), B, T, nullptr, {.context = context});
  std::printf("logits %s with a context of %lld positions\n", out.logits.shape().str().c_str(), (long long)Tc);
  return out.logits.shape() == fbt::Shape{B, T, 256} ? 0 : 1;
}
