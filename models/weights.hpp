// Model weights <-> safetensors, with MODEL.md's names and shapes; the model config travels in
// __metadata__ so a checkpoint says what it is.
#pragma once
#include <map>
#include <memory>
#include <string>

#include "util/safetensors.hpp"
#include "models/model.hpp"

namespace fbt {

// A weights or training-state file fbt wrote, its checksum verified (a damaged file is an error
// naming it); a file from before fbt recorded checksums loads with a note on stderr.
SafeTensors load_checked(const std::string& path);

// Every parameter as F32, plus __metadata__ {"format": "pt", "fbt_model_config": <json>}.
SafeTensors weights_to_safetensors(const Model& model);
// Copies tensors into the model. A missing or extra tensor, a wrong dtype or shape is an error
// naming the tensor and `source`; with spans_may_be_missing, span ratios the file lacks keep the
// model's values (weights of a model without adaptive span, fine-tuned with it). Returns how many
// were kept so.
int64_t load_weights(Model& model, const SafeTensors& st, const std::string& source, bool spans_may_be_missing = false);

std::string model_config_to_json(const ModelConfig& c);
ModelConfig model_config_from_json(const std::string& json, const std::string& source);

// A model built from the config in the file's __metadata__, with its weights (a run directory:
// load_model, train/checkpoint.hpp).
std::unique_ptr<Model> load_model_file(const std::string& path);
// Weights (and the model config, and any `extra` metadata such as the run's tokenizer) to a
// safetensors file, atomically.
using Metadata = std::map<std::string, std::string>;
void save_model(const Model& model, const std::string& path, const Metadata& extra = {});

// Gradients as "grad.<name>" F32 tensors.
void add_gradients(SafeTensors& st, const Model& model);

}  // namespace fbt
