// Incremental decoding: the prompt runs through the model once, then one step per new token
// with the memory carried, so each token costs the same however long the text grows.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "models/model.hpp"

namespace fbt {

struct SampleOptions {
  int64_t tokens = 200;
  float temperature = 0.8f;  // 0: greedy
  int64_t top_k = 200;       // 0: no cut
  uint64_t seed = 1;
  int64_t vocab = 0;         // > 0: draw only ids below this (a tokenizer smaller than num_tokens)
};

// Returns the new tokens; on_token (optional) sees each as it is drawn.
std::vector<int32_t> generate(Model& model, const std::vector<int32_t>& prompt, const SampleOptions& opt,
                              const std::function<void(int32_t)>& on_token = {});

}  // namespace fbt
