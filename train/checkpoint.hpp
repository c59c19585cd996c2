// A run's checkpoints, the one owner of their layout on disk:
//   out_dir/checkpoints/step_NNNNNNNN/{model.safetensors, state.safetensors, DONE}
// A checkpoint is written in step_NNNNNNNN.tmp/ and renamed into place once DONE is in it, so a
// directory without the ".tmp" suffix is always complete; a kill midway leaves only a .tmp
// leftover, which the next resume clears.
#pragma once
#include <cmath>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "backend/rng.hpp"
#include "data/tokenizer.hpp"
#include "models/model.hpp"

namespace fbt {

// What a resume needs besides the weights (state.safetensors).
struct TrainingState {
  int64_t step = 0;
  std::vector<float> adam_m, adam_v;
  int64_t adam_steps = 0;
  std::vector<float> memory;  // every stream's carried memory, of shape memory_shape
  std::vector<int64_t> memory_shape;  // Model::memory_shape: (B, rows, D), the baseline's (L, B, rows, D)
  int64_t cursor = 0;  // the batcher's position in the training split
  Rng dropout_rng;
  int64_t threads = 0;      // a different count changes the floating-point sums
  int64_t processes = 1;    // data-parallel ranks (docs/DISTRIBUTED.md); another count re-splits the streams
  double elapsed_s = 0;     // wall time the run has trained (and evaluated) so far, over all its sessions
  double valid_accuracy = NAN;  // of the evaluation at this step, if one ran (train.target_accuracy reads it)
  double log_loss_sum = 0;  // the training losses since the last log line, summed in order
  int64_t log_updates = 0;  // how many
  std::string config_yaml;  // the effective run config
};

class Checkpoints {
 public:
  explicit Checkpoints(const std::string& out_dir);

  const std::string& dir() const { return dir_; }
  // The newest complete checkpoint's directory, "" if there is none.
  std::string latest() const;
  // Every complete checkpoint's directory, oldest first.
  std::vector<std::string> complete() const;
  // Removes the leftovers of saves that were killed midway.
  void clear_partial() const;
  // Writes the model and the state as step_NNNNNNNN (atomically: see above), then keeps only the
  // newest keep_last complete checkpoints.
  // `weights_metadata` goes into model.safetensors (the run's tokenizer).
  void save(const Model& model, const TrainingState& state, int64_t keep_last,
            const std::map<std::string, std::string>& weights_metadata = {}) const;

 private:
  std::string dir_;
};

// Loads the weights of checkpoint directory `dir` into model; its saved model config must equal
// the model's (`config_source` names where the model's came from, for the error).
void load_checkpoint_weights(Model& model, const std::string& dir, const std::string& config_source);
// train.init_from: the weights of `source` (a file, a run or checkpoint directory: resolve_weights)
// into a model of the same type, matched by name and shape (the config may differ in what has no
// weights: mem_len, dropout); a model with adaptive span may start from one without (its spans
// start at adapt_span_init). Returns what was read, for the log.
std::string load_init_weights(Model& model, const std::string& source);
// Reads state.safetensors of checkpoint directory `dir`; a missing or inconsistent entry is an
// error naming the file.
TrainingState load_training_state(const std::string& dir);

// Newest directory out_dir/checkpoints/step_* holding a DONE marker ("" if none).
std::string latest_checkpoint(const std::string& out_dir);
// The weights file meant by a path: a file as it is; a directory's model.safetensors, or else the
// model.safetensors of its newest complete checkpoint (a run's out_dir).
std::string resolve_weights(const std::string& dir_or_file);
// A model built from the config in the weights file's __metadata__, with its weights.
std::unique_ptr<Model> load_model(const std::string& dir_or_file);
// The tokenizer a weights file records (fbt_tokenizer, fbt_tokenizer_file in __metadata__), its
// file found beside the weights or in their run directory; bytes for a 256-token model that
// records none; null otherwise.
std::unique_ptr<Tokenizer> load_run_tokenizer(const std::string& dir_or_file);

}  // namespace fbt
