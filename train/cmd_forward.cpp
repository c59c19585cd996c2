// `fbt forward`: one call of the model on a batch from a safetensors file, in eval mode, writing
// logits, loss, the memory after the call and (with --grads) every parameter's gradient.
#include <fmt/core.h>

#include "data/safetensors.hpp"
#include "models/config.hpp"
#include "models/weights.hpp"
#include "ops/check.hpp"
#include "train/commands.hpp"

namespace fbt::cli {

namespace {
std::vector<int64_t> dims(const Shape& s) { return std::vector<int64_t>(s.d.begin(), s.d.begin() + s.nd); }

Shape to_shape(const std::vector<int64_t>& v, const std::string& what) {
  check(v.size() <= size_t(Shape::kMaxDims), what, ": too many dimensions");
  Shape s;
  for (int64_t d : v) s.d[size_t(s.nd++)] = d;
  return s;
}
}  // namespace

int run_forward(const ForwardArgs& a) {
  ModelConfig cfg = load_model_config(a.config);
  FeedbackTransformer model(cfg);
  load_weights(model, SafeTensors::load(a.weights), a.weights);
  DetachPolicy policy;
  try {
    policy = DetachPolicy::parse(a.detach, cfg.seq_len);
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(std::string("--detach: ") + e.what());
  }

  SafeTensors batch = SafeTensors::load(a.batch);
  auto need = [&](const std::string& name) -> const StTensor& {
    if (!batch.has(name)) throw SafeTensorsError(a.batch + ": missing tensor '" + name + "'");
    return batch.at(name);
  };
  const StTensor& in = need("inputs");
  const StTensor& tg = need("targets");
  check(in.shape.size() == 2, a.batch, ": inputs must be [B, T], got rank ", in.shape.size());
  check(tg.shape == in.shape, a.batch, ": targets shape differs from inputs shape");
  const int64_t B = in.shape[0], T = in.shape[1];
  std::vector<int32_t> tokens = in.to_i32(a.batch + ": inputs"), targets = tg.to_i32(a.batch + ": targets");
  for (size_t i = 0; i < tokens.size(); ++i)
    check(tokens[i] >= 0 && tokens[i] < cfg.num_tokens && targets[i] >= 0 && targets[i] < cfg.num_tokens, a.batch,
          ": token id at flat position ", i, " outside [0, num_tokens=", cfg.num_tokens, ")");

  std::vector<float> mem_data, ctx_data;
  Tensor memory;
  if (batch.has("memory")) {
    const StTensor& m = batch.at("memory");
    mem_data = m.to_f32(a.batch + ": memory");
    memory = Tensor{mem_data.data(), to_shape(m.shape, "memory"), Device::CPU};
  }
  tape().reset();
  Var context;
  if (batch.has("context")) {
    const StTensor& c = batch.at("context");
    ctx_data = c.to_f32(a.batch + ": context");
    context = tape().leaf_copy(Tensor{ctx_data.data(), to_shape(c.shape, "context"), Device::CPU});
  }
  for (auto& [name, t] : batch.tensors)
    check(name == "inputs" || name == "targets" || name == "memory" || name == "context", a.batch,
          ": unexpected tensor '", name, "' (expected inputs, targets, memory, context)");

  SafeTensors out;
  {
    std::unique_ptr<NoGradScope> ng;
    if (!a.grads) ng = std::make_unique<NoGradScope>();
    ForwardOutput r = model.forward(tokens.data(), B, T, memory.data ? &memory : nullptr, context, targets.data(), policy);
    if (a.grads) {
      model.params().zero_grad();
      tape().backward(r.loss);
      add_gradients(out, model);
    }
    out.tensors["logits"] = StTensor::from_f32(dims(r.logits.shape()), r.logits.data());
    out.tensors["loss"] = StTensor::from_f32({}, r.loss.data());
    out.tensors["memory"] = StTensor::from_f32(dims(r.memory.shape), r.memory.data);
    fmt::print("loss {:.6f}  logits [{}, {}, {}]  memory [{}, {}, {}]{}\n", r.loss.data()[0], B, T, cfg.num_tokens, B,
               r.memory.shape[1], cfg.dim, a.grads ? fmt::format("  grads under detach {}", policy.str()) : "");
  }
  out.metadata["detach"] = policy.str();
  out.save(a.out);
  return 0;
}

}  // namespace fbt::cli
