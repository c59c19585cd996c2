// A small training run on disk for tests: a temporary directory, a byte corpus, a run config
// (model, data, train) and the final weights a run leaves.
#pragma once
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "util/safetensors.hpp"

namespace fbt::testing {

namespace fs = std::filesystem;

struct TempDir {
  fs::path path;
  TempDir() {
    static int counter = 0;
    path = fs::temp_directory_path() / ("fbt_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  std::string operator/(const std::string& name) const { return (path / name).string(); }
};

inline void write_bytes(const std::string& path, const void* data, size_t n) {
  std::ofstream out(path, std::ios::binary);
  out.write(static_cast<const char*>(data), std::streamsize(n));
}

inline std::string text_corpus(size_t n) {
  const std::string verse = "And God said, Let there be light: and there was light. ";
  std::string s;
  while (s.size() < n) s += verse;
  return s.substr(0, n);
}

inline std::string write_config(const TempDir& d, const std::string& extra_train = "", const std::string& extra_model = "") {
  const std::string text = text_corpus(6000);
  write_bytes(d / "train.bin", text.data(), text.size());
  write_bytes(d / "valid.bin", text.data(), 900);
  std::ofstream(d / "run.yaml") << "model:\n  num_tokens: 256\n  dim: 16\n  depth: 2\n  heads: 2\n  dim_head: 8\n"
                                   "  mem_len: 8\n"
                                << extra_model << "data:\n  format: bytes\n  train: " << (d / "train.bin")
                                << "\n  valid: " << (d / "valid.bin")
                                << "\ntrain:\n  batch_size: 3\n  bptt: 7\n  steps: 8\n  warmup: 2\n  lr: 0.01\n"
                                   "  eval_every: 4\n  log_every: 2\n  checkpoint_every: 3\n  keep_last: 2\n"
                                   "  sample_tokens: 0\n  threads: 1\n  out_dir: "
                                << (d / "out") << "\n"
                                << extra_train;
  return d / "run.yaml";
}

inline std::vector<float> final_weights(const std::string& out_dir) {
  SafeTensors st = SafeTensors::load(out_dir + "/model.safetensors");
  std::vector<float> all;
  for (auto& [name, t] : st.tensors) {
    auto v = t.to_f32(name);
    all.insert(all.end(), v.begin(), v.end());
  }
  return all;
}

}  // namespace fbt::testing
