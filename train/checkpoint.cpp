#include "train/checkpoint.hpp"

#include <fmt/core.h>

#include <algorithm>
#include <filesystem>

#include "models/weights.hpp"
#include "util/files.hpp"
#include "util/safetensors.hpp"

namespace fs = std::filesystem;

namespace fbt {

namespace {

constexpr const char* kWeights = "model.safetensors";
constexpr const char* kState = "state.safetensors";
constexpr const char* kDone = "DONE";
constexpr const char* kPartial = ".tmp";

std::string step_dir_name(int64_t step) { return fmt::format("step_{:08d}", step); }

bool is_complete(const fs::path& dir) {
  const std::string name = dir.filename().string();
  return name.size() == step_dir_name(0).size() && name.rfind("step_", 0) == 0 && fs::exists(dir / kDone);
}

// The complete checkpoints' directory names, oldest first.
std::vector<std::string> complete_checkpoints(const std::string& dir) {
  std::vector<std::string> done;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return done;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (is_complete(e.path())) done.push_back(e.path().filename().string());
  std::sort(done.begin(), done.end());
  return done;
}

SafeTensors training_state_tensors(const TrainingState& s) {
  SafeTensors st;
  st.tensors["adam.m"] = StTensor::from_f32({int64_t(s.adam_m.size())}, s.adam_m.data());
  st.tensors["adam.v"] = StTensor::from_f32({int64_t(s.adam_v.size())}, s.adam_v.data());
  st.tensors["memory"] = StTensor::from_f32(s.memory_shape, s.memory.data());
  st.metadata["step"] = std::to_string(s.step);
  st.metadata["adam_steps"] = std::to_string(s.adam_steps);
  st.metadata["cursor"] = std::to_string(s.cursor);
  st.metadata["dropout_rng_seed"] = std::to_string(s.dropout_rng.seed);
  st.metadata["dropout_rng_counter"] = std::to_string(s.dropout_rng.counter);
  st.metadata["threads"] = std::to_string(s.threads);
  st.metadata["processes"] = std::to_string(s.processes);
  st.metadata["elapsed_s"] = fmt::format("{:.3f}", s.elapsed_s);
  if (std::isfinite(s.valid_accuracy)) st.metadata["valid_accuracy"] = fmt::format("{:.17g}", s.valid_accuracy);
  st.metadata["log_loss_sum"] = fmt::format("{:.17g}", s.log_loss_sum);  // 17 digits: the same double back
  st.metadata["log_updates"] = std::to_string(s.log_updates);
  st.metadata["config"] = s.config_yaml;
  return st;
}

}  // namespace

Checkpoints::Checkpoints(const std::string& out_dir) : dir_((fs::path(out_dir) / "checkpoints").string()) {}

std::string Checkpoints::latest() const {
  const std::vector<std::string> done = complete();
  return done.empty() ? "" : done.back();
}

std::vector<std::string> Checkpoints::complete() const {
  std::vector<std::string> done = complete_checkpoints(dir_);
  for (std::string& name : done) name = (fs::path(dir_) / name).string();
  return done;
}

void Checkpoints::clear_partial() const {
  std::error_code ec;
  if (!fs::is_directory(dir_, ec)) return;
  for (const auto& e : fs::directory_iterator(dir_))
    if (e.path().extension() == kPartial) fs::remove_all(e.path());
}

void Checkpoints::save(const Model& model, const TrainingState& state, int64_t keep_last,
                       const std::map<std::string, std::string>& weights_metadata) const {
  fs::create_directories(dir_);
  const fs::path final_dir = fs::path(dir_) / step_dir_name(state.step);
  const fs::path tmp_dir = fs::path(dir_) / (step_dir_name(state.step) + kPartial);
  try {
    fs::remove_all(tmp_dir);
    fs::create_directories(tmp_dir);
    save_model(model, (tmp_dir / kWeights).string(), weights_metadata);
    training_state_tensors(state).save((tmp_dir / kState).string());
    write_text_atomic((tmp_dir / kDone).string(), std::to_string(state.step) + "\n");
    fsync_path(tmp_dir.string());
  } catch (const std::exception& e) {  // a full disk, a size limit: leave no partial checkpoint behind
    std::error_code ec;
    fs::remove_all(tmp_dir, ec);
    throw std::runtime_error(fmt::format("checkpoint of step {} not saved ({}): {}", state.step,
                                         latest().empty() ? "no earlier checkpoint" : "earlier ones are intact", e.what()));
  }
  fs::remove_all(final_dir);
  fs::rename(tmp_dir, final_dir);
  fsync_path(dir_);

  const std::vector<std::string> done = complete_checkpoints(dir_);
  for (size_t i = 0; i + size_t(keep_last) < done.size(); ++i) fs::remove_all(fs::path(dir_) / done[i]);
}

void load_checkpoint_weights(Model& model, const std::string& dir, const std::string& config_source) {
  const std::string path = (fs::path(dir) / kWeights).string();
  SafeTensors w = load_checked(path);
  const auto saved = w.metadata.find("fbt_model_config");
  const ModelConfig cfg = model_config_from_json(saved == w.metadata.end() ? "" : saved->second, path);
  if (model_config_to_json(cfg) != model_config_to_json(model.config()))
    throw std::runtime_error(path + ": the checkpoint's model config differs from " + config_source + "'s model: section");
  load_weights(model, w, path);
}

std::string load_init_weights(Model& model, const std::string& source) {
  const std::string path = resolve_weights(source);
  const SafeTensors st = load_checked(path);
  const auto saved = st.metadata.find("fbt_model_config");
  if (saved != st.metadata.end()) {
    const ModelConfig from = model_config_from_json(saved->second, path);
    if (from.type != model.config().type)
      throw std::runtime_error(path + " (train.init_from): weights of a " + from.type + " model; this run's model.type is " +
                               model.config().type);
  }
  const int64_t kept = load_weights(model, st, path + " (train.init_from)", /*spans_may_be_missing=*/true);
  return kept ? path + fmt::format(" (it has no spans: {} layers' spans start at model.adapt_span_init)", kept) : path;
}

TrainingState load_training_state(const std::string& dir) {
  const std::string path = (fs::path(dir) / kState).string();
  SafeTensors st = load_checked(path);
  auto meta = [&](const std::string& k) -> const std::string& {
    const auto it = st.metadata.find(k);
    if (it == st.metadata.end()) throw SafeTensorsError(path + ": missing metadata '" + k + "'");
    return it->second;
  };
  // A value that is not a number is damage, named like any other (std::stoll's own error names nothing).
  auto parsed = [&](const std::string& k, auto parse) {
    try {
      return parse(meta(k));
    } catch (const std::logic_error&) {
      throw SafeTensorsError(path + ": metadata '" + k + "' is not a number: \"" + meta(k) + "\"");
    }
  };
  auto number = [&](const std::string& k) { return parsed(k, [](const std::string& v) { return int64_t(std::stoll(v)); }); };
  auto unsigned_number = [&](const std::string& k) {
    return parsed(k, [](const std::string& v) { return uint64_t(std::stoull(v)); });
  };
  auto real = [&](const std::string& k) { return parsed(k, [](const std::string& v) { return std::stod(v); }); };
  TrainingState s;
  s.step = number("step");
  s.adam_m = st.at("adam.m").to_f32(path);
  s.adam_v = st.at("adam.v").to_f32(path);
  s.adam_steps = number("adam_steps");
  if (s.adam_steps < 0 || s.adam_steps > s.step)  // skipped steps count as steps, not as updates
    throw SafeTensorsError(path + ": optimizer steps exceed the steps taken");
  const StTensor& mem = st.at("memory");
  if (mem.shape.size() < 3) throw SafeTensorsError(path + ": memory must be [B, rows, D] or [L, B, rows, D]");
  s.memory = mem.to_f32(path);
  s.memory_shape = mem.shape;
  s.cursor = number("cursor");
  s.dropout_rng.seed = unsigned_number("dropout_rng_seed");
  s.dropout_rng.counter = unsigned_number("dropout_rng_counter");
  s.threads = number("threads");
  if (st.metadata.count("processes")) s.processes = number("processes");  // 1 before data-parallel runs
  if (st.metadata.count("elapsed_s")) s.elapsed_s = real("elapsed_s");  // 0 before it was kept
  if (st.metadata.count("valid_accuracy")) s.valid_accuracy = real("valid_accuracy");
  if (st.metadata.count("log_updates")) s.log_updates = number("log_updates"), s.log_loss_sum = real("log_loss_sum");  // 0 before they were kept
  if (s.log_updates < 0 || !std::isfinite(s.log_loss_sum))
    throw SafeTensorsError(path + ": metadata 'log_updates' or 'log_loss_sum' out of range");
  const auto cfg = st.metadata.find("config");
  if (cfg != st.metadata.end()) s.config_yaml = cfg->second;
  return s;
}

std::string latest_checkpoint(const std::string& out_dir) { return Checkpoints(out_dir).latest(); }

std::string resolve_weights(const std::string& dir_or_file) {
  if (!fs::is_directory(dir_or_file)) return dir_or_file;
  if (fs::exists(fs::path(dir_or_file) / kWeights)) return (fs::path(dir_or_file) / kWeights).string();
  const std::string latest = latest_checkpoint(dir_or_file);
  if (latest.empty())
    throw SafeTensorsError(dir_or_file + ": no model.safetensors and no complete checkpoint in this directory");
  return (fs::path(latest) / kWeights).string();
}

std::unique_ptr<Model> load_model(const std::string& dir_or_file) {
  return load_model_file(resolve_weights(dir_or_file));
}

std::unique_ptr<Tokenizer> load_run_tokenizer(const std::string& dir_or_file) {
  const std::string weights = resolve_weights(dir_or_file);
  const SafeTensors st = SafeTensors::load(weights);
  auto meta = [&](const std::string& key) {
    const auto it = st.metadata.find(key);
    return it == st.metadata.end() ? std::string() : it->second;
  };
  const std::string kind = meta("fbt_tokenizer"), file = meta("fbt_tokenizer_file");
  if (kind.empty()) {
    const std::string config = meta("fbt_model_config");
    return !config.empty() && model_config_from_json(config, weights).num_tokens == 256 ? load_tokenizer("bytes", "")
                                                                                         : nullptr;
  }
  if (file.empty()) return load_tokenizer(kind, "");
  // A weights file is shared between people: the name it records is only ever the one fbt writes
  // beside it, never a path that would make fbt read elsewhere.
  if (file != tokenizer_file_name(kind))
    throw std::runtime_error(weights + ": records the tokenizer file \"" + file + "\" for a " + kind +
                             " tokenizer; fbt reads only " + tokenizer_file_name(kind) +
                             " beside the weights or in their run directory");
  // Beside the weights (a run's out_dir, a results folder) or in the run of a checkpoint directory.
  fs::path dir = fs::absolute(weights).parent_path();
  for (int up = 0; up < 3 && !dir.empty(); ++up, dir = dir.parent_path())
    if (fs::exists(dir / file)) return load_tokenizer(kind, (dir / file).string());
  throw std::runtime_error(weights + ": records the " + kind + " tokenizer " + file +
                           ", but no such file is beside it or in its run directory");
}

}  // namespace fbt
