#include "models/config.hpp"

#include <limits>
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
  if (type != "transformer_xl") return;
  need(seq_len == 1, "seq_len must be 1 for type transformer_xl (every position of a call runs in parallel)");
  need(!keep_last_hidden, "keep_last_hidden does not apply to type transformer_xl");
  need(!shared_kv, "shared_kv does not apply to type transformer_xl (every layer has its own to_kv)");
}

ModelConfig parse_model_config(ConfigSection& s) {
  ModelConfig c;
  c.type = s.get<std::string>("type", c.type);
  c.shared_kv = c.type == "feedback";  // the baseline's layers each project their own memory
  c.num_tokens = s.require<int64_t>("num_tokens");
  c.dim = s.require<int64_t>("dim");
  c.depth = s.require<int64_t>("depth");
  c.heads = s.get<int64_t>("heads", c.heads);
  c.dim_head = s.get<int64_t>("dim_head", c.dim_head);
  c.ff_mult = s.get<int64_t>("ff_mult", c.ff_mult);
  c.seq_len = s.get<int64_t>("seq_len", c.seq_len);
  c.mem_len = s.require<int64_t>("mem_len");
  c.num_buckets = s.get<int64_t>("num_buckets", c.num_buckets);
  c.max_distance = s.get<int64_t>("max_distance", c.max_distance);
  c.keep_last_hidden = s.get<bool>("keep_last_hidden", c.keep_last_hidden);
  c.shared_kv = s.get<bool>("shared_kv", c.shared_kv);
  c.cross_attend = s.get<bool>("cross_attend", c.cross_attend);
  c.attn_dropout = s.get<float>("attn_dropout", c.attn_dropout);
  c.ff_dropout = s.get<float>("ff_dropout", c.ff_dropout);
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
