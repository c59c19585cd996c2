// Checkpoints: what they hold, pruning, and resume that continues bit-identically.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "run_fixture.hpp"
#include "train/trainer.hpp"
#include "util/safetensors.hpp"

using namespace fbt;
using namespace fbt::testing;
namespace fs = std::filesystem;

TEST_CASE("train: checkpoints hold weights and state and keep_last prunes") {
  TempDir d;
  RunConfig c = load_run_config(write_config(d));
  Trainer(c).run(false);
  const std::string ck = d / "out/checkpoints";
  CHECK_FALSE(fs::exists(ck + "/step_00000003"));  // pruned (keep_last 2)
  CHECK(fs::exists(ck + "/step_00000006/DONE"));
  CHECK(fs::exists(ck + "/step_00000008/DONE"));
  CHECK(latest_checkpoint(d / "out") == ck + "/step_00000008");
  SafeTensors st = SafeTensors::load(ck + "/step_00000008/state.safetensors");
  CHECK(st.metadata.at("step") == "8");
  CHECK(st.at("memory").shape == std::vector<int64_t>{3, 8, 16});
  CHECK(final_weights(d / "out") == final_weights(ck + "/step_00000008"));
  std::ifstream metrics(d / "out/metrics.jsonl");
  std::string line;
  int train_lines = 0, valid_lines = 0;
  double elapsed = 0;
  while (std::getline(metrics, line)) {
    const nlohmann::json j = nlohmann::json::parse(line);
    train_lines += j["split"] == "train";
    valid_lines += j["split"] == "valid";
    CHECK(j["tokens"] == j["step"].get<int64_t>() * 3 * 7);  // batch_size x bptt a step
    CHECK(j["elapsed_s"].get<double>() >= elapsed);
    elapsed = j["elapsed_s"];
  }
  CHECK(train_lines == 4);
  CHECK(valid_lines == 2);
  CHECK(std::stod(st.metadata.at("elapsed_s")) > 0);
  CHECK(st.metadata.count("valid_accuracy") == 0);  // byte data: no accuracy to keep
  // A number that is not one is damage named by file and key, not std::stoll's bare "stoll".
  for (const char* key : {"step", "cursor", "dropout_rng_seed", "elapsed_s"}) {
    SafeTensors bad = st;
    bad.metadata[key] = "lots";
    bad.save(d / "state.safetensors");
    CHECK_THROWS_WITH_AS(load_training_state(d.path.string()),
                         doctest::Contains((std::string("state.safetensors: metadata '") + key + "' is not a number").c_str()),
                         SafeTensorsError);
  }
  // A second run into the same out_dir without --resume would overwrite: refused.
  CHECK_THROWS_WITH(Trainer(c).run(false), doctest::Contains("already holds checkpoints"));
}

// The training loss of every train line in a run's metrics.jsonl, in order.
static std::vector<double> train_losses(const std::string& out_dir) {
  std::ifstream metrics(out_dir + "/metrics.jsonl");
  std::vector<double> losses;
  for (std::string line; std::getline(metrics, line);)
    if (const nlohmann::json j = nlohmann::json::parse(line); j["split"] == "train") losses.push_back(j["loss"]);
  return losses;
}

TEST_CASE("train: resume continues bit-identically to an uninterrupted run") {
  for (std::string dropout : {"", "  attn_dropout: 0.2\n  ff_dropout: 0.1\n", "  type: transformer_xl\n  attn_dropout: 0.2\n"}) {
    TempDir a, b;
    Trainer(load_run_config(write_config(a, "", dropout))).run(false);
    RunConfig cb = load_run_config(write_config(b, "", dropout));
    Trainer(cb).run(false, 5);  // a session that ends after step 5 (checkpoints at 3 and 5)
    CHECK(latest_checkpoint(b / "out").find("step_00000005") != std::string::npos);
    const double first_session_s = std::stod(
        SafeTensors::load(latest_checkpoint(b / "out") + "/state.safetensors").metadata.at("elapsed_s"));
    Trainer(cb).run(true);
    CHECK(final_weights(a / "out") == final_weights(b / "out"));
    // the log line after the resume (step 6) averages steps 5 and 6, as the uninterrupted run's does
    CHECK(train_losses(a / "out") == train_losses(b / "out"));
    // the run's wall time goes on from the checkpoint's
    CHECK(std::stod(SafeTensors::load(latest_checkpoint(b / "out") + "/state.safetensors").metadata.at("elapsed_s")) >
          first_session_s);
  }
}

TEST_CASE("train: resume skips incomplete checkpoints and starts over without any") {
  TempDir d;
  RunConfig c = load_run_config(write_config(d));
  Trainer(c).run(false, 3);
  fs::create_directories(d / "out/checkpoints/step_00000007");  // no DONE: a killed save
  fs::create_directories(d / "out/checkpoints/step_00000009.tmp");
  CHECK(latest_checkpoint(d / "out").find("step_00000003") != std::string::npos);
  Trainer t(c);
  t.run(true);
  CHECK(t.step() == 8);
  CHECK_FALSE(fs::exists(d / "out/checkpoints/step_00000009.tmp"));
  TempDir e;
  RunConfig ce = load_run_config(write_config(e));
  Trainer fresh(ce);
  fresh.run(true);  // nothing to resume: from step 0
  CHECK(fresh.step() == 8);
}
