#include "models/config.hpp"

#include <limits>
#include <type_traits>
#include <stdexcept>
#include <utility>

#include "util/config_section.hpp"

namespace fbt {

void ModelConfig::validate() const {
  auto need = [](bool ok, const std::string& msg) {
    if (!ok) throw std::invalid_argument(msg);
  };
  need(num_tokens >= 1, "num_tokens must be >= 1");
  need(dim >= 1, "dim must be >= 1");
  need(depth >= 1, "depth must be >= 1");
  need(heads >= 1, "heads must be >= 1");
  need(dim_head >= 1, "dim_head must be >= 1");
  need(ff_mult >= 1, "ff_mult must be >= 1");
  need(seq_len >= 1, "seq_len must be >= 1");
  need(mem_len >= 1, "mem_len must be >= 1");
  need(num_buckets >= 2, "num_buckets must be >= 2");
  // Bounds that keep every weight's element count within int64 (a hostile config in a weights
  // file must not wrap a size around); token ids are int32.
  constexpr int64_t kMost = int64_t(1) << 20;
  const std::pair<const char*, int64_t> sizes[] = {{"dim", dim},         {"depth", depth},       {"heads", heads},
                                                   {"dim_head", dim_head}, {"ff_mult", ff_mult}, {"seq_len", seq_len},
                                                   {"mem_len", mem_len}, {"num_buckets", num_buckets},
                                                   {"max_distance", max_distance}};
  for (const auto& [name, v] : sizes) need(v <= kMost, std::string(name) + " must be <= " + std::to_string(kMost));
  need(num_tokens <= std::numeric_limits<int32_t>::max(), "num_tokens must be <= 2147483647 (token ids are int32)");
  need(max_distance > num_buckets / 2, "max_distance must be greater than num_buckets / 2 (" +
                                           std::to_string(num_buckets / 2) + ")");
  need(attn_dropout >= 0.f && attn_dropout < 1.f, "attn_dropout must be in [0, 1)");
  need(ff_dropout >= 0.f && ff_dropout < 1.f, "ff_dropout must be in [0, 1)");
  need(type == "feedback" || type == "transformer_xl", "type '" + type + "' is not one of feedback, transformer_xl");
  need(adapt_span_ramp >= 1 && adapt_span_ramp <= kMost, "adapt_span_ramp must be in [1, " + std::to_string(kMost) + "]");
  need(adapt_span_init >= 0.f && adapt_span_init <= 1.f, "adapt_span_init must be in [0, 1]");
  const ModelConfig defaults;
  need(adapt_span || adapt_span_ramp == defaults.adapt_span_ramp, "adapt_span_ramp applies only with adapt_span: true");
  need(adapt_span || adapt_span_init == defaults.adapt_span_init, "adapt_span_init applies only with adapt_span: true");
  if (type != "transformer_xl") return;
  need(seq_len == 1, "seq_len must be 1 for type transformer_xl (every position of a call runs in parallel)");
  need(!keep_last_hidden, "keep_last_hidden does not apply to type transformer_xl");
  need(!shared_kv, "shared_kv does not apply to type transformer_xl (every layer has its own to_kv)");
}

const std::vector<ModelField>& model_fields() {
  using C = ModelConfig;
  static const std::vector<ModelField> fields = {
      {"num_tokens", &C::num_tokens, true, false},
      {"dim", &C::dim, true, false},
      {"depth", &C::depth, true, false},
      {"heads", &C::heads, false, false},
      {"dim_head", &C::dim_head, false, false},
      {"ff_mult", &C::ff_mult, false, false},
      {"seq_len", &C::seq_len, false, true},
      {"mem_len", &C::mem_len, true, false},
      {"num_buckets", &C::num_buckets, false, false},
      {"max_distance", &C::max_distance, false, false},
      {"keep_last_hidden", &C::keep_last_hidden, false, true},
      {"shared_kv", &C::shared_kv, false, true},
      {"cross_attend", &C::cross_attend, false, false},
      {"attn_dropout", &C::attn_dropout, false, false},
      {"ff_dropout", &C::ff_dropout, false, false},
      {"adapt_span", &C::adapt_span, false, false, true},
      {"adapt_span_ramp", &C::adapt_span_ramp, false, false, true},
      {"adapt_span_init", &C::adapt_span_init, false, false, true},
  };
  return fields;
}

bool at_default(const ModelField& f, const ModelConfig& c) {
  static const ModelConfig defaults;
  return std::visit([&](auto member) { return c.*member == defaults.*member; }, f.member);
}

ModelConfig parse_model_config(ConfigSection& s) {
  ModelConfig c;
  c.type = s.get<std::string>("type", c.type);
  c.shared_kv = c.type == "feedback";  // the baseline's layers each project their own memory
  for (const ModelField& f : model_fields())
    std::visit(
        [&](auto member) {
          using T = std::remove_reference_t<decltype(c.*member)>;
          c.*member = f.required ? s.require<T>(f.key) : s.get<T>(f.key, c.*member);
        },
        f.member);
  s.finish();
  try {
    c.validate();
  } catch (const std::invalid_argument& e) {
    const std::string msg = e.what();
    s.fail(msg.substr(0, msg.find(' ')), msg);
  }
  return c;
}

ModelConfig load_model_config(const std::string& path) {
  YAML::Node root = load_yaml_file(path);
  if (!root["model"]) throw ConfigError(path + ": no `model:` section");
  ConfigSection s(root["model"], path, "model");
  return parse_model_config(s);
}

}  // namespace fbt
