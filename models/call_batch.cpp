#include "models/call_batch.hpp"

#include <algorithm>

#include "util/safetensors.hpp"
#include "util/check.hpp"

namespace fbt {

CallBatch load_call_batch(const std::string& path, const ModelConfig& cfg) {
  SafeTensors st = SafeTensors::load(path);
  for (auto& [name, t] : st.tensors)
    check(name == "inputs" || name == "targets" || name == "memory" || name == "context", path,
          ": unexpected tensor '", name, "' (expected inputs, targets, memory, context)");
  check(st.has("inputs") && st.has("targets"), path, ": needs tensors 'inputs' and 'targets'");
  const StTensor& in = st.at("inputs");
  check(in.shape.size() == 2, path, ": inputs must be [B, T], got rank ", in.shape.size());
  check(st.at("targets").shape == in.shape, path, ": targets shape differs from inputs shape");
  CallBatch b;
  b.B = in.shape[0], b.T = in.shape[1];
  b.tokens = in.to_i32(path + ": inputs");
  b.targets = st.at("targets").to_i32(path + ": targets");
  for (size_t i = 0; i < b.tokens.size(); ++i)
    check(b.tokens[i] >= 0 && b.tokens[i] < cfg.num_tokens && b.targets[i] >= 0 && b.targets[i] < cfg.num_tokens,
          path, ": token id at flat position ", i, " outside [0, num_tokens=", cfg.num_tokens, ")");
  if (st.has("memory")) {
    const StTensor& m = st.at("memory");
    const bool xl = cfg.type == "transformer_xl";  // per-layer memory: [L, B, m, D]
    const std::vector<int64_t> lead = xl ? std::vector<int64_t>{cfg.depth, b.B} : std::vector<int64_t>{b.B};
    const size_t r = lead.size();  // the axis of the rows
    check(m.shape.size() == r + 2 && std::equal(lead.begin(), lead.end(), m.shape.begin()) && m.shape[r] <= cfg.mem_len &&
              m.shape[r + 1] == cfg.dim,
          path, ": memory must be [", xl ? "L=" + std::to_string(cfg.depth) + ", " : "", "B=", b.B,
          ", m <= mem_len=", cfg.mem_len, ", D=", cfg.dim, "]");
    b.memory = m.to_f32(path + ": memory");
    b.memory_rows = m.shape[r];
  }
  if (st.has("context")) {
    const StTensor& c = st.at("context");
    check(c.shape.size() == 3 && c.shape[0] == b.B && c.shape[1] >= 1 && c.shape[2] == cfg.dim, path,
          ": context must be [B=", b.B, ", Tc >= 1, D=", cfg.dim, "]");
    b.context = c.to_f32(path + ": context");
    b.context_rows = c.shape[1];
  }
  return b;
}

ForwardOutput forward_batch(Model& model, const CallBatch& b, const DetachPolicy& policy,
                            bool with_targets, Rng* dropout) {
  const int64_t D = model.config().dim;
  State state;
  if (b.memory_rows) state.memory.assign_host(b.memory, model.memory_shape(b.B, b.memory_rows), model.device());
  CallOptions options;
  if (b.context_rows)
    options.context = tape().leaf_copy(Tensor{const_cast<float*>(b.context.data()), Shape{b.B, b.context_rows, D}, Device::CPU});
  options.targets = with_targets ? b.targets.data() : nullptr;
  options.policy = policy;
  options.train = dropout != nullptr;
  options.rng = dropout;
  return model.forward(b.tokens.data(), b.B, b.T, &state, options);
}

}  // namespace fbt
