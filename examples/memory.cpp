// The seed's second snippet: carry the memory across calls (like model(x, memory=mem,
// return_memory=True)), and train through it with truncated backprop.
#include <fbt/fbt.hpp>
#include <cstdio>

int main() {
  fbt::FeedbackTransformer model({.num_tokens = 256, .dim = 64, .depth = 2, .heads = 4, .dim_head = 16,
                                  .seq_len = 1, .mem_len = 32});
  const int64_t B = 2, T = 16;
  std::vector<int32_t> x(B * T), y(B * T);
  fbt::State state;  // empty: the first call starts with no memory; each call replaces it with its own
  for (int call = 0; call < 3; ++call) {
    for (size_t i = 0; i < x.size(); ++i) x[i] = int32_t((i + call * 5) % 256), y[i] = int32_t((i + call * 5 + 1) % 256);
    const fbt::StepScope step(model.device());  // this call's activations, freed at the end of the loop body
    model.params().zero_grad();
    fbt::CallOptions options;
    options.targets = y.data();
    options.policy = fbt::DetachPolicy::parse("horizon:8", 1);
    fbt::ForwardOutput out = model.forward(x.data(), B, T, &state, options);
    fbt::tape().backward(out.loss);  // gradients reach 8 steps back inside the call
    std::printf("call %d: loss %.4f, memory %s, |grad| %.4f\n", call, out.loss.data()[0],
                state.memory.shape().str().c_str(), fbt::global_grad_norm(model.params()));
  }
  return state.memory.shape() == fbt::Shape{B, 32, 64} ? 0 : 1;
}
