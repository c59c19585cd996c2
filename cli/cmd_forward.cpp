// `fbt forward`: one call of the model on a batch from a safetensors file, in eval mode, writing
// logits, loss, the memory after the call and (with --grads) every parameter's gradient.
#include <fmt/core.h>

#include <memory>

#include "models/call_batch.hpp"
#include "util/safetensors.hpp"
#include "models/config.hpp"
#include "models/weights.hpp"
#include "util/check.hpp"
#include "cli/commands.hpp"
#include "cli/common.hpp"

namespace fbt::cli {

namespace {

struct ForwardArgs {
  std::string config, weights, batch, out, detach = "none", device = "cpu";
  bool grads = false;
};

void run_forward(const ForwardArgs& a) {
  const ModelConfig cfg = load_model_config(a.config);
  const std::unique_ptr<Model> model_ptr = model_with_weights(cfg, a.weights, a.device);
  Model& model = *model_ptr;
  const DetachPolicy policy = detach_flag(a.detach, cfg.seq_len);
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
}

}  // namespace

void add_forward(CLI::App& app) {
  auto a = std::make_shared<ForwardArgs>();
  CLI::App* sub = app.add_subcommand("forward", "run one forward (and backward) call on a batch file");
  sub->add_option("--config", a->config, "YAML file with a model: section")->required()->check(CLI::ExistingFile);
  sub->add_option("--weights", a->weights, "model weights (safetensors)")->required()->check(CLI::ExistingFile);
  sub->add_option("--batch", a->batch, "inputs/targets [B,T] (+ memory, context) (safetensors)")
      ->required()
      ->check(CLI::ExistingFile);
  sub->add_option("--out", a->out, "output safetensors: logits, loss, memory [, grad.*]")->required();
  sub->add_flag("--grads", a->grads, "also write grad.<name> for every parameter");
  sub->add_option("--detach", a->detach, "detachment policy: none | all | every:N | horizon:N");
  sub->add_option("--device", a->device, "cpu | cuda")->check(CLI::IsMember({"cpu", "cuda"}));
  sub->callback([a] { run_forward(*a); });
}

}  // namespace fbt::cli
