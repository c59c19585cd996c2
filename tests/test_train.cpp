// Training: run config parsing and errors, every corpus format, the stream batcher, AdamW
// against a hand-computed step, the schedule, evaluation, checkpoints and bit-exact resume.
#include <doctest/doctest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "util/safetensors.hpp"
#include "models/weights.hpp"
#include "util/config_section.hpp"
#include "train/optimizer.hpp"
#include "run_fixture.hpp"
#include "train/trainer.hpp"

using namespace fbt;
using namespace fbt::testing;
namespace fs = std::filesystem;

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
}

TEST_CASE("run config: errors name the file the line and the key") {
  TempDir d;
  const std::string path = write_config(d, "  lrr: 3\n");
  CHECK_THROWS_WITH_AS(load_run_config(path), doctest::Contains("run.yaml:25: train.lrr: unknown key"), ConfigError);
  CHECK_THROWS_WITH_AS(load_run_config(write_config(d), {"train.steps=many"}),
                       doctest::Contains("train.steps: expected an integer, got 'many'"), ConfigError);
  CHECK_THROWS_WITH_AS(load_run_config(write_config(d), {"train.schedule=linear"}),
                       doctest::Contains("train.schedule: 'linear' is not one of constant, cosine"), ConfigError);
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
  std::ofstream(d / "bad.yaml") << "model: [1, 2\n";
  CHECK_THROWS_WITH_AS(load_run_config(d / "bad.yaml"), doctest::Contains("YAML syntax error"), ConfigError);
  CHECK_THROWS_WITH_AS(load_run_config(d / "missing.yaml"), doctest::Contains("cannot open"), ConfigError);
}

TEST_CASE("data: bytes u16 u32 and llm.c shards") {
  TempDir d;
  const uint8_t b[5] = {1, 2, 3, 250, 0};
  write_bytes(d / "b.bin", b, 5);
  Corpus cb(d / "b.bin", "bytes", 256);
  CHECK(cb.size() == 5);
  CHECK(cb[3] == 250);
  const uint16_t w[3] = {7, 65000, 3};
  write_bytes(d / "w.bin", w, 6);
  Corpus cw(d / "w.bin", "u16", 65536);
  CHECK(cw[1] == 65000);
  const uint32_t u[2] = {100000, 5};
  write_bytes(d / "u.bin", u, 8);
  CHECK(Corpus(d / "u.bin", "u32", 200000)[0] == 100000);
  for (int version : {1, 7}) {
    std::vector<int32_t> header(256, 0);
    header[0] = version == 1 ? 20240520 : 20240801;
    header[1] = version;
    header[2] = 3;
    std::vector<uint8_t> f(1024);
    std::memcpy(f.data(), header.data(), 1024);
    for (uint32_t tok : {11u, 12u, 13u})
      for (int k = 0; k < (version == 1 ? 2 : 4); ++k) f.push_back(uint8_t(tok >> (8 * k)));
    write_bytes(d / ("shard_val_00000" + std::to_string(version) + ".bin"), f.data(), f.size());
  }
  Corpus shards(d / "shard_val_*.bin", "llmc", 50);
  CHECK(shards.size() == 6);
  CHECK(shards[0] == 11);
  CHECK(shards[5] == 13);
  std::vector<int32_t> out(4);
  shards.read(1, 4, out.data());
  CHECK(out == std::vector<int32_t>{12, 13, 11, 12});
}

TEST_CASE("data: malformed corpora get clear errors") {
  TempDir d;
  const uint8_t odd[3] = {1, 2, 3};
  write_bytes(d / "odd.bin", odd, 3);
  CHECK_THROWS_WITH_AS(Corpus(d / "odd.bin", "u16", 10), doctest::Contains("not a multiple of 2"), DataError);
  CHECK_THROWS_WITH_AS(Corpus(d / "odd.bin", "bytes", 3), doctest::Contains("token id 3 at position 2"), DataError);
  CHECK_THROWS_WITH_AS(Corpus(d / "odd.bin", "llmc", 10), doctest::Contains("too short for an llm.c header"), DataError);
  std::vector<int32_t> header(256, 0);
  header[0] = 12345;
  header[1] = 1;
  write_bytes(d / "magic.bin", header.data(), 1024);
  CHECK_THROWS_WITH_AS(Corpus(d / "magic.bin", "llmc", 10), doctest::Contains("bad llm.c header: magic 12345"), DataError);
  header[0] = 20240520;
  header[2] = 5;
  write_bytes(d / "short.bin", header.data(), 1024);
  CHECK_THROWS_WITH_AS(Corpus(d / "short.bin", "llmc", 10), doctest::Contains("header says 5 tokens"), DataError);
  CHECK_THROWS_WITH_AS(Corpus(d / "none.bin", "bytes", 256), doctest::Contains("cannot open"), DataError);
  CHECK_THROWS_WITH_AS(Corpus(d / "nothing_*.bin", "bytes", 256), doctest::Contains("no file matches"), DataError);
}

TEST_CASE("batcher: contiguous streams with shifted targets") {
  TempDir d;
  std::vector<uint8_t> seq(23);
  for (size_t i = 0; i < seq.size(); ++i) seq[i] = uint8_t(i);
  write_bytes(d / "s.bin", seq.data(), seq.size());
  Corpus c(d / "s.bin", "bytes", 256);
  StreamBatcher b(c, 3, 4);  // streams of 7: [0..6], [7..13], [14..20]
  CHECK(b.stream_length() == 7);
  std::vector<int32_t> in(12), tg(12);
  CHECK(b.next(in.data(), tg.data(), false) == 4);
  CHECK(in == std::vector<int32_t>{0, 1, 2, 3, 7, 8, 9, 10, 14, 15, 16, 17});
  CHECK(tg == std::vector<int32_t>{1, 2, 3, 4, 8, 9, 10, 11, 15, 16, 17, 18});
  CHECK(b.next(in.data(), tg.data(), false) == 0);  // only 2 predictable positions left
  CHECK(b.next(in.data(), tg.data(), true) == 2);
  CHECK(std::vector<int32_t>(tg.begin(), tg.begin() + 6) == std::vector<int32_t>{5, 6, 12, 13, 19, 20});
  b.rewind();
  CHECK(b.cursor() == 0);
  CHECK_THROWS_AS(StreamBatcher(c, 20, 4), DataError);
}

TEST_CASE("adamw: one parameter against hand-computed steps") {
  ParamStore ps;
  Var w = ps.add("layers.0.attn.to_q.weight", {1, 2});
  Var b = ps.add("layers.0.attn.to_out.bias", {1});
  ps.finalize();
  w.data()[0] = 1.f, w.data()[1] = -2.f, b.data()[0] = 0.5f;
  AdamW opt(ps, AdamWConfig{0.9, 0.999, 1e-8, 0.1});
  double p = 1.0, m = 0, v = 0, q = 0.5, mq = 0, vq = 0;
  const double lr = 0.01;
  for (int t = 1; t <= 3; ++t) {
    const double g = 0.3 * t, gq = -0.2;
    ps.grads()[0] = float(g), ps.grads()[1] = 0.f, ps.grads()[2] = float(gq);
    opt.step(lr);
    p -= lr * 0.1 * p;  // decoupled decay on the matrix
    m = 0.9 * m + 0.1 * g;
    v = 0.999 * v + 0.001 * g * g;
    p -= lr * (m / (1 - std::pow(0.9, t))) / (std::sqrt(v / (1 - std::pow(0.999, t))) + 1e-8);
    mq = 0.9 * mq + 0.1 * gq;  // no decay on the bias
    vq = 0.999 * vq + 0.001 * gq * gq;
    q -= lr * (mq / (1 - std::pow(0.9, t))) / (std::sqrt(vq / (1 - std::pow(0.999, t))) + 1e-8);
    CHECK(w.data()[0] == doctest::Approx(p).epsilon(1e-6));
    CHECK(b.data()[0] == doctest::Approx(q).epsilon(1e-6));
  }
  CHECK(w.data()[1] == doctest::Approx(-2.0 * std::pow(1 - lr * 0.1, 3)).epsilon(1e-6));  // decay only
  CHECK_FALSE(AdamW::decays("pos_bias.weight", 2));
  CHECK_FALSE(AdamW::decays("layer_weight", 1));
  CHECK(AdamW::decays("token_emb.weight", 2));
}

TEST_CASE("schedule: warmup then cosine to min_lr and clipping") {
  CHECK(learning_rate(0, 10, 100, 1.0, 0.1, true) == doctest::Approx(0.1));
  CHECK(learning_rate(9, 10, 100, 1.0, 0.1, true) == doctest::Approx(1.0));
  CHECK(learning_rate(10, 10, 100, 1.0, 0.1, true) == doctest::Approx(1.0));
  CHECK(learning_rate(55, 10, 100, 1.0, 0.1, true) == doctest::Approx(0.55));
  CHECK(learning_rate(100, 10, 100, 1.0, 0.1, true) == doctest::Approx(0.1));
  CHECK(learning_rate(70, 10, 100, 1.0, 0.1, false) == doctest::Approx(1.0));
  ParamStore ps;
  ps.add("a", {2});
  ps.finalize();
  ps.grads()[0] = 3.f, ps.grads()[1] = 4.f;
  CHECK(clip_grad_norm(ps, 1.0) == doctest::Approx(5.0));
  CHECK(ps.grads()[0] == doctest::Approx(0.6).epsilon(1e-5));
  CHECK(clip_grad_norm(ps, 0.0) == doctest::Approx(1.0).epsilon(1e-5));
}

TEST_CASE("eval: the exact model gives the same loss whatever the call length") {
  TempDir d;
  RunConfig c = load_run_config(write_config(d));
  FeedbackTransformer model(c.model);
  model.init(3);
  Corpus valid(c.data.valid, "bytes", 256);
  EvalResult a = evaluate(model, valid, 3, 5), b = evaluate(model, valid, 3, 50);
  CHECK(a.tokens == 3 * 299);
  CHECK(a.tokens == b.tokens);
  CHECK(a.loss == doctest::Approx(b.loss).epsilon(1e-5));
  CHECK(a.bpc() == doctest::Approx(a.loss / std::log(2.0)));
  CHECK(a.loss == doctest::Approx(std::log(256.0)).epsilon(0.05));  // untrained: near uniform
}

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
  while (std::getline(metrics, line)) {
    train_lines += line.find("\"split\":\"train\"") != std::string::npos;
    valid_lines += line.find("\"split\":\"valid\"") != std::string::npos;
  }
  CHECK(train_lines == 4);
  CHECK(valid_lines == 2);
  // A second run into the same out_dir without --resume would overwrite: refused.
  CHECK_THROWS_WITH(Trainer(c).run(false), doctest::Contains("already holds checkpoints"));
}

TEST_CASE("train: resume continues bit-identically to an uninterrupted run") {
  for (std::string dropout : {"", "  attn_dropout: 0.2\n  ff_dropout: 0.1\n"}) {
    TempDir a, b;
    Trainer(load_run_config(write_config(a, "", dropout))).run(false);
    RunConfig cb = load_run_config(write_config(b, "", dropout));
    Trainer(cb).run(false, 5);  // a session that ends after step 5 (checkpoints at 3 and 5)
    CHECK(latest_checkpoint(b / "out").find("step_00000005") != std::string::npos);
    Trainer(cb).run(true);
    CHECK(final_weights(a / "out") == final_weights(b / "out"));
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

TEST_CASE("train: an unwritable out_dir is an error before any work") {
  TempDir d;
  RunConfig c = load_run_config(write_config(d), {"train.out_dir=/proc/fbt-cannot-write"});
  CHECK_THROWS_WITH(Trainer(c).run(false), doctest::Contains("cannot create or write"));
}
