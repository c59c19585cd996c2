// The model's hyper-parameters, named and defaulted exactly as ../shared/docs/MODEL.md.
#pragma once
#include <cstdint>
#include <string>
#include <variant>
#include <vector>

namespace YAML {
class Node;
}

namespace fbt {

class ConfigSection;

struct ModelConfig {
  int64_t num_tokens = 0;  // V, required
  int64_t dim = 0;         // D, required
  int64_t depth = 0;       // L, required
  int64_t heads = 8;       // H
  int64_t dim_head = 64;   // Dh
  int64_t ff_mult = 4;     // F = ff_mult * D
  int64_t seq_len = 1;     // window; 1 is the paper's exact model
  int64_t mem_len = 0;     // required
  int64_t num_buckets = 32;
  int64_t max_distance = 128;
  bool keep_last_hidden = false;
  bool shared_kv = true;
  bool cross_attend = false;
  float attn_dropout = 0.f;
  float ff_dropout = 0.f;
  // Adaptive attention span (MODEL.md): each head learns how far back it looks.
  bool adapt_span = false;
  int64_t adapt_span_ramp = 32;   // R: the soft edge of a span, in steps
  float adapt_span_init = 0.f;    // every head's initial span ratio z
  // feedback (everything above) or transformer_xl (MODEL.md "The baseline": per-layer memory;
  // seq_len 1, no keep_last_hidden, no shared_kv)
  std::string type = "feedback";

  int64_t inner() const { return heads * dim_head; }  // I
  int64_t ff_inner() const { return ff_mult * dim; }  // F

  // Throws std::invalid_argument naming the first bad field.
  void validate() const;
};

// One row per key of the model section but `type` (read first: it sets shared_kv's default), in
// MODEL.md's order. The YAML reader, the weights file's metadata (both ways), a run folder's
// config.yaml, the Python constructors' keywords and their docstrings all walk this table, and
// a test checks that docs/CONFIG.md lists every key.
struct ModelField {
  const char* key;
  std::variant<int64_t ModelConfig::*, bool ModelConfig::*, float ModelConfig::*> member;
  bool required;       // no default: a config must give it
  bool feedback_only;  // not a key of type transformer_xl (MODEL.md "The baseline")
  // Written (to weights files, config.yaml) only when it is not the default, and read as the
  // default when absent: a key added later, so that models without it keep their files' bytes.
  bool omitted_at_default = false;
};
const std::vector<ModelField>& model_fields();
// Whether field f of c holds its default (ModelConfig{}'s) value.
bool at_default(const ModelField& f, const ModelConfig& c);

// Reads the `model:` section (unknown keys, wrong types and bad values are errors naming the key).
ModelConfig parse_model_config(ConfigSection& section);
// Parses a whole file and reads its `model:` section (other sections are ignored here).
ModelConfig load_model_config(const std::string& path);

}  // namespace fbt
