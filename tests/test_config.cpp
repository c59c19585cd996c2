// Run configs: defaults, --set overrides, and errors that name the file, the line and the key
// (model: errors are in the model config case).
#include <doctest/doctest.h>
#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <fstream>

#include "run_fixture.hpp"
#include "train/config.hpp"
#include "util/config_section.hpp"

using namespace fbt;
using namespace fbt::testing;

TEST_CASE("run config: defaults and overrides") {
  TempDir d;
  RunConfig c = load_run_config(write_config(d), {"train.lr=0.5", "model.seq_len=2", "train.detach=every:4"});
  CHECK(c.train.lr == 0.5);
  CHECK(c.model.seq_len == 2);
  CHECK(c.train.detach == "every:4");
  CHECK(c.train.beta2 == 0.999);
  CHECK(c.train.schedule == "cosine");
  RunConfig again = load_run_config(write_config(d));
  std::ofstream(d / "effective.yaml") << run_config_yaml(again);
  RunConfig round = load_run_config(d / "effective.yaml");
  CHECK(run_config_yaml(round) == run_config_yaml(again));
  // The baseline's effective config names its type (a run directory's config.yaml rebuilds it).
  RunConfig xl = load_run_config(write_config(d, "", "  type: transformer_xl\n"));
  std::ofstream(d / "xl.yaml") << run_config_yaml(xl);
  CHECK(load_run_config(d / "xl.yaml").model.type == "transformer_xl");
  CHECK_FALSE(load_run_config(d / "xl.yaml").model.shared_kv);
  CHECK_THROWS_WITH_AS(load_run_config(write_config(d, "  detach: all\n", "  type: transformer_xl\n")),
                       doctest::Contains("train.detach: detachment policies do not apply"), ConfigError);
}

TEST_CASE("run config: errors name the file the line and the key") {
  TempDir d;
  const std::string path = write_config(d, "  lrr: 3\n");
  CHECK_THROWS_WITH_AS(load_run_config(path), doctest::Contains("run.yaml:25: train.lrr: unknown key"), ConfigError);
  CHECK_THROWS_WITH_AS(load_run_config(write_config(d), {"train.steps=many"}),
                       doctest::Contains("train.steps: expected an integer, got 'many'"), ConfigError);
  CHECK_THROWS_WITH_AS(load_run_config(write_config(d), {"train.schedule=linear"}),
                       doctest::Contains("train.schedule: 'linear' is not one of constant, cosine"), ConfigError);
  CHECK_THROWS_WITH_AS(load_run_config(write_config(d), {"train.init=xavier"}),
                       doctest::Contains("train.init: 'xavier' is not one of gpt2, torch"), ConfigError);
  CHECK(load_run_config(write_config(d), {"train.init=torch"}).train.init == "torch");
  CHECK_THROWS_WITH_AS(load_run_config(write_config(d), {"model.seq_len=3", "train.detach=every:4"}),
                       doctest::Contains("not a multiple of seq_len"), ConfigError);
  CHECK_THROWS_WITH_AS(load_run_config(write_config(d), {"data.format=u8"}),
                       doctest::Contains("data.format: 'u8' is not one of"), ConfigError);
  CHECK_THROWS_WITH_AS(load_run_config(write_config(d), {"model.num_tokens=300"}),
                       doctest::Contains("format bytes needs num_tokens: 256"), ConfigError);
  CHECK_THROWS_WITH_AS(load_run_config(write_config(d), {"train.batch_size=0"}),
                       doctest::Contains("train.batch_size: must be >= 1"), ConfigError);
  CHECK_THROWS_WITH_AS(load_run_config(write_config(d), {"train.lr"}), doctest::Contains("expected section.key=value"),
                       ConfigError);
  // NaN never reaches the optimizer (YAML's .nan is not read as a number), and a negative warmup is named
  for (const char* key : {"lr", "min_lr", "weight_decay", "beta1", "beta2", "eps", "clip"})
    CHECK_THROWS_WITH_AS(load_run_config(write_config(d), {std::string("train.") + key + "=.nan"}),
                         doctest::Contains((std::string("train.") + key + ": ").c_str()), ConfigError);
  CHECK_THROWS_WITH_AS(load_run_config(write_config(d), {"train.warmup=-3"}),
                       doctest::Contains("train.warmup: must be >= 0, got -3"), ConfigError);
  CHECK_THROWS_WITH_AS(load_run_config(write_config(d), {"train.target_accuracy=1.5"}),
                       doctest::Contains("train.target_accuracy: must be in [0, 1]"), ConfigError);
  CHECK_THROWS_WITH_AS(load_run_config(write_config(d), {"train.target_accuracy=0.9"}),
                       doctest::Contains("train.target_accuracy: needs labelled data (data.labels: true)"), ConfigError);
  std::ofstream(d / "bad.yaml") << "model: [1, 2\n";
  CHECK_THROWS_WITH_AS(load_run_config(d / "bad.yaml"), doctest::Contains("YAML syntax error"), ConfigError);
  CHECK_THROWS_WITH_AS(load_run_config(d / "missing.yaml"), doctest::Contains("cannot open"), ConfigError);
}

TEST_CASE("model config: errors name the key and the line") {
  auto parse = [](const std::string& text) {
    YAML::Node root = YAML::Load(text);
    ConfigSection s(root["model"], "m.yaml", "model");
    return parse_model_config(s);
  };
  CHECK(parse("model:\n  num_tokens: 7\n  dim: 8\n  depth: 1\n  mem_len: 4\n").heads == 8);
  CHECK_THROWS_WITH_AS(parse("model:\n  num_tokens: 7\n  dim: 8\n  depth: 1\n  mem_len: 4\n  dimm: 3\n"),
                       "m.yaml:6: model.dimm: unknown key", ConfigError);
  CHECK_THROWS_WITH_AS(parse("model:\n  num_tokens: 7\n  depth: 1\n  mem_len: 4\n"),
                       doctest::Contains("model.dim: required key is missing"), ConfigError);
  CHECK_THROWS_WITH_AS(parse("model:\n  num_tokens: 7\n  dim: eight\n  depth: 1\n  mem_len: 4\n"),
                       "m.yaml:3: model.dim: expected an integer, got 'eight'", ConfigError);
  CHECK_THROWS_WITH_AS(parse("model:\n  num_tokens: 7\n  dim: 8\n  depth: 0\n  mem_len: 4\n"),
                       doctest::Contains("model.depth: depth must be >= 1"), ConfigError);
  // Sizes that would overflow a weight's element count (a hostile config in weights metadata)
  CHECK_THROWS_WITH_AS(parse("model:\n  num_tokens: 7\n  dim: 1099511627776\n  depth: 1\n  mem_len: 4\n"),
                       doctest::Contains("dim must be <= 1048576"), ConfigError);
  CHECK_THROWS_WITH_AS(parse("model:\n  num_tokens: 8589934592\n  dim: 8\n  depth: 1\n  mem_len: 4\n"),
                       doctest::Contains("num_tokens must be <= 2147483647"), ConfigError);
  CHECK_THROWS_WITH_AS(parse("model:\n  num_tokens: 7\n  dim: 8\n  depth: 1\n  mem_len: 4\n  shared_kv: maybe\n"),
                       doctest::Contains("expected true or false"), ConfigError);
}

// The shipped recipes (configs/, what ./run algorithmic and the docs name) parse and validate: a
// typo in one is caught here, not hours into a run. A tokenizer file is checked when the config is
// loaded, but it is data `fbt prepare` writes, absent from a fresh clone: a stand-in takes its place.
TEST_CASE("config: every recipe under configs/ loads and validates") {
  TempDir d;
  std::ofstream(d / "tokenizer.model") << "stand-in";
  int recipes = 0;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(FBT_SOURCE_DIR "/configs")) {
    if (entry.path().extension() != ".yaml") continue;
    CAPTURE(entry.path().string());
    std::vector<std::string> overrides;
    if (YAML::LoadFile(entry.path().string())["data"]["tokenizer_model"])
      overrides.push_back("data.tokenizer_model=" + (d / "tokenizer.model"));
    const RunConfig c = load_run_config(entry.path().string(), overrides);
    CHECK(!c.train.out_dir.empty());
    ++recipes;
  }
  CHECK(recipes >= 12);
}

TEST_CASE("model config: docs/CONFIG.md's model table lists every key of the field table") {
  std::ifstream in(FBT_SOURCE_DIR "/docs/CONFIG.md");
  std::string line, model_section;
  bool inside = false;
  while (std::getline(in, line)) {
    if (line.rfind("## ", 0) == 0) inside = line == "## model:";
    else if (inside) model_section += line + "\n";
  }
  REQUIRE(!model_section.empty());
  CHECK(model_section.find("| `type` |") != std::string::npos);
  for (const ModelField& f : model_fields()) {
    INFO(f.key);
    CHECK(model_section.find("| `" + std::string(f.key) + "` |") != std::string::npos);
  }
}
