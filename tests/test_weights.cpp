// Model weights from safetensors files: every mismatch is an error naming the tensor.
#include <doctest/doctest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "models/feedback_transformer.hpp"
#include "models/weights.hpp"

using namespace fbt;

TEST_CASE("weights: load errors name the tensor") {
  ModelConfig c;
  c.num_tokens = 5;
  c.dim = 4;
  c.depth = 1;
  c.heads = 1;
  c.dim_head = 2;
  c.mem_len = 3;
  FeedbackTransformer m(c);
  SafeTensors st = weights_to_safetensors(m);
  CHECK(model_config_from_json(st.metadata.at("fbt_model_config"), "x").dim == 4);
  FeedbackTransformer m2(c);
  m2.init(9);
  load_weights(m2, SafeTensors::parse(st.serialize(), "w"), "w");
  CHECK(m2.params().values() == m.params().values());

  SafeTensors missing = st;
  missing.tensors.erase("layers.0.ff.w_in.bias");
  CHECK_THROWS_WITH(load_weights(m2, missing, "w.safetensors"),
                    "w.safetensors: missing tensor 'layers.0.ff.w_in.bias'");
  SafeTensors extra = st;
  extra.tensors["layers.1.ff.w_in.bias"] = st.tensors["layers.0.ff.w_in.bias"];
  CHECK_THROWS_WITH(load_weights(m2, extra, "w.safetensors"), doctest::Contains("unexpected tensor 'layers.1.ff.w_in.bias'"));
  SafeTensors wrong = st;
  float z[20] = {};
  wrong.tensors["token_emb.weight"] = StTensor::from_f32({4, 5}, z);
  CHECK_THROWS_WITH(load_weights(m2, wrong, "w.safetensors"),
                    "w.safetensors: tensor 'token_emb.weight' has shape [4, 5], expected [5, 4]");
}

TEST_CASE("weights: a hostile model config in a weights file's metadata is one error naming the file") {
  for (const char* bad : {"not json", "{\"num_tokens\": 5}", "{\"type\": \"feedback\", \"num_tokens\": 5, \"dim\": -4}",
                          "[1, 2]", "{\"num_tokens\": \"$(touch ran)\"}"}) {
    INFO(bad);
    CHECK_THROWS_WITH_AS(model_config_from_json(bad, "shared.safetensors"),
                         doctest::Contains("shared.safetensors: bad model config in __metadata__"), SafeTensorsError);
  }
  // Fields with sizes no validation allows (validate() names the key).
  nlohmann::json j = nlohmann::json::parse(weights_to_safetensors(FeedbackTransformer([] {
                                             ModelConfig c;
                                             c.num_tokens = 5, c.dim = 4, c.depth = 1, c.heads = 1, c.dim_head = 2;
                                             c.mem_len = 3;
                                             return c;
                                           }())).metadata.at("fbt_model_config"));
  j["heads"] = 0;
  CHECK_THROWS_AS(model_config_from_json(j.dump(), "shared.safetensors"), SafeTensorsError);
}
