#include "models/weights.hpp"

#include <fmt/core.h>

#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

namespace fbt {

namespace {
std::string shape_str(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}
}  // namespace

std::string model_config_to_json(const ModelConfig& c) {
  nlohmann::json j = nlohmann::json::object();  // keys sorted: the same text whatever the table's order
  for (const ModelField& f : model_fields())
    if (!f.omitted_at_default || !at_default(f, c)) std::visit([&](auto member) { j[f.key] = c.*member; }, f.member);
  if (c.type != "feedback") j["type"] = c.type;  // absent: feedback (files written before the baseline)
  return j.dump();
}

ModelConfig model_config_from_json(const std::string& text, const std::string& source) {
  ModelConfig c;
  try {
    auto j = nlohmann::json::parse(text);
    c.type = j.value("type", std::string("feedback"));
    for (const ModelField& f : model_fields())  // every key is written (but those omitted at their default)
      if (!f.omitted_at_default || j.contains(f.key)) std::visit([&](auto member) { j.at(f.key).get_to(c.*member); }, f.member);
    c.validate();
  } catch (const std::exception& e) {
    throw SafeTensorsError(source + ": bad model config in __metadata__: " + e.what());
  }
  return c;
}

SafeTensors weights_to_safetensors(const Model& model) {
  SafeTensors st;
  const ParamStore& ps = model.params();
  for (size_t i = 0; i < ps.size(); ++i) {
    Var p = ps.at(i);
    st.tensors[ps.names()[i]] = StTensor::from_f32(p.shape().dims(), to_host(p.value()).data());
  }
  st.metadata["format"] = "pt";
  st.metadata["fbt_model_config"] = model_config_to_json(model.config());
  return st;
}

void add_gradients(SafeTensors& st, const Model& model) {
  const ParamStore& ps = model.params();
  for (size_t i = 0; i < ps.size(); ++i) {
    Var p = ps.at(i);
    st.tensors["grad." + ps.names()[i]] = StTensor::from_f32(p.shape().dims(), to_host(p.grad()).data());
  }
}

int64_t load_weights(Model& model, const SafeTensors& st, const std::string& source, bool spans_may_be_missing) {
  ParamStore& ps = model.params();
  int64_t kept = 0;
  for (auto& [name, t] : st.tensors)
    if (!ps.has(name))
      throw SafeTensorsError(source + ": unexpected tensor '" + name + "' (not a parameter of this model config)");
  for (size_t i = 0; i < ps.size(); ++i) {
    const std::string& name = ps.names()[i];
    if (!st.has(name) && spans_may_be_missing && ps.role(i) == ParamRole::SpanRatio) {
      ++kept;
      continue;
    }
    if (!st.has(name)) throw SafeTensorsError(source + ": missing tensor '" + name + "'");
    const StTensor& t = st.at(name);
    Var p = ps.at(i);
    if (t.dtype != "F32") throw SafeTensorsError(source + ": tensor '" + name + "' has dtype " + t.dtype + ", expected F32");
    if (t.shape != p.shape().dims())
      throw SafeTensorsError(source + ": tensor '" + name + "' has shape " + shape_str(t.shape) + ", expected " +
                             p.shape().str());
    std::memcpy(ps.values().data() + ps.offset(i), t.bytes.data(), t.bytes.size());
  }
  ps.sync_to_device();
  return kept;
}

SafeTensors load_checked(const std::string& path) {
  SafeTensors st = SafeTensors::load(path);
  if (!st.verified)
    fmt::print(stderr, "note: {} records no checksum (written before fbt verified its files): loaded unverified\n", path);
  return st;
}

std::unique_ptr<Model> load_model_file(const std::string& path) {
  SafeTensors st = load_checked(path);
  if (!st.metadata.count("fbt_model_config"))
    throw SafeTensorsError(path + ": no fbt_model_config in __metadata__ (not written by fbt?)");
  auto model = make_model(model_config_from_json(st.metadata.at("fbt_model_config"), path),
                                                     /*initialize=*/false);
  load_weights(*model, st, path);
  return model;
}

void save_model(const Model& model, const std::string& path, const Metadata& extra) {
  SafeTensors st = weights_to_safetensors(model);
  st.metadata.insert(extra.begin(), extra.end());
  st.save(path);
}

}  // namespace fbt
