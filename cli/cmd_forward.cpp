// `fbt forward`: one call of the model on a batch from a safetensors file, in eval mode, writing
// logits, loss, the memory after the call and (with --grads) every parameter's gradient.
#include <fmt/core.h>

#include "models/call_batch.hpp"
#include "util/safetensors.hpp"
#include "models/config.hpp"
#include "models/weights.hpp"
#include "util/check.hpp"
#include "cli/commands.hpp"

namespace fbt::cli {

int run_forward(const ForwardArgs& a) {
  ModelConfig cfg = load_model_config(a.config);
  FeedbackTransformer model(cfg, /*initialize=*/false);  // weights loaded next
  load_weights(model, SafeTensors::load(a.weights), a.weights);
  DetachPolicy policy;
  try {
    policy = DetachPolicy::parse(a.detach, cfg.seq_len);
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(std::string("--detach: ") + e.what());
  }

  model.to(parse_device(a.device));
  const CallBatch b = load_call_batch(a.batch, cfg);
  const int64_t B = b.B, T = b.T;
  SafeTensors out;
  {
    const StepScope scope(model.device());
    std::unique_ptr<NoGradScope> ng;
    if (!a.grads) ng = std::make_unique<NoGradScope>();
    ForwardOutput r = forward_batch(model, b, policy);
    if (a.grads) {
      model.params().zero_grad();
      tape().backward(r.loss);
      add_gradients(out, model);
    }
    const std::vector<float> loss = to_host(r.loss.value());
    out.tensors["logits"] = StTensor::from_f32(r.logits.shape().dims(), to_host(r.logits.value()).data());
    out.tensors["loss"] = StTensor::from_f32({}, loss.data());
    out.tensors["memory"] = StTensor::from_f32(r.memory.shape.dims(), to_host(r.memory).data());
    fmt::print("loss {:.6f}  logits [{}, {}, {}]  memory [{}, {}, {}]{}\n", loss[0], B, T, cfg.num_tokens, B,
               r.memory.shape[1], cfg.dim, a.grads ? fmt::format("  grads under detach {}", policy.str()) : "");
  }
  out.metadata["detach"] = policy.str();
  out.save(a.out);
  return 0;
}

}  // namespace fbt::cli
