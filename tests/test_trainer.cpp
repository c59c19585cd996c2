// The trainer and evaluation: loss independent of the call length, out_dir checked first.
#include <doctest/doctest.h>
#include <omp.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>

#include "backend/threads.hpp"
#include "gradcheck.hpp"
#include "models/feedback_transformer.hpp"
#include "train/loop.hpp"
#include "run_fixture.hpp"
#include "train/trainer.hpp"

using namespace fbt;
using namespace fbt::testing;

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

TEST_CASE("train: an unwritable out_dir is an error before any work") {
  TempDir d;
  RunConfig c = load_run_config(write_config(d), {"train.out_dir=/proc/fbt-cannot-write"});
  CHECK_THROWS_WITH(Trainer(c).run(false), doctest::Contains("cannot create or write"));
}

TEST_CASE("train: init_from starts a new run from another run's weights, matched by name and shape") {
  TempDir d;
  REQUIRE(Trainer(load_run_config(write_config(d))).run(false));
  const std::vector<float> trained = final_weights(d / "out");

  // A step this small leaves every weight as loaded: the new run's final weights are the old run's.
  // mem_len has no weights, so it may differ.
  const std::string tiny = "train.lr=1e-30", no_decay = "train.weight_decay=0", min = "train.min_lr=0";
  // --resume with nothing to resume is a fresh run, from init_from's weights too (./run algorithmic's stages).
  for (const bool resume : {false, true})
    for (const std::string& from : {d / "out", d / "out/model.safetensors"}) {
      TempDir e;
      RunConfig c = load_run_config(write_config(d), {"train.init_from=" + from, "train.out_dir=" + (e / "out"),
                                                      "model.mem_len=5", tiny, no_decay, min, "train.steps=2"});
      REQUIRE(Trainer(c).run(resume));
      CHECK(final_weights(e / "out") == trained);
    }

  TempDir e;
  RunConfig wider = load_run_config(write_config(d), {"train.init_from=" + (d / "out"), "train.out_dir=" + (e / "a"),
                                                      "model.dim=24"});
  CHECK_THROWS_WITH(Trainer(wider).run(false), doctest::Contains("(train.init_from): tensor 'token_emb.weight' has shape"));
  RunConfig xl = load_run_config(write_config(d), {"train.init_from=" + (d / "out"), "train.out_dir=" + (e / "b"),
                                                   "model.type=transformer_xl", "model.shared_kv=false"});
  CHECK_THROWS_WITH(Trainer(xl).run(false), doctest::Contains("weights of a feedback model; this run's model.type is transformer_xl"));
  RunConfig missing = load_run_config(write_config(d), {"train.init_from=" + (e / "nothing"), "train.out_dir=" + (e / "c")});
  CHECK_THROWS(Trainer(missing).run(false));
}

// Gradient accumulation (train.grad_accum): K micro-batches give one pass's losses within float
// rounding, carry each stream's memory as one pass does, and the micro-batch split of a state is
// exact both ways (the feedback model's (B, m, D) and the baseline's (L, B, m, D)).
TEST_CASE("train: grad_accum matches one pass within rounding and carries every stream's memory") {
  for (const char* type : {"feedback", "transformer_xl"}) {
    CAPTURE(type);
    ModelConfig mc;
    mc.type = type, mc.num_tokens = 40, mc.dim = 16, mc.depth = 2, mc.heads = 2, mc.dim_head = 8, mc.mem_len = 8;
    mc.shared_kv = mc.type == "feedback";
    auto one = make_model(mc), four = make_model(mc);
    LoopConfig lc;
    lc.lr = 3e-3;
    TrainLoop plain(*one, lc);
    lc.grad_accum = 4;
    TrainLoop accum(*four, lc);
    const int64_t B = 8, T = 6;
    std::vector<int32_t> x, y;
    for (int step = 0; step < 5; ++step) {
      x = tokens(B * T, 10 + step, 40), y = tokens(B * T, 20 + step, 40);
      y[3] = kNoTarget;  // micro-batches with unequal target counts weigh by their counts
      const StepStats a = plain.step(x.data(), y.data(), B, T), b = accum.step(x.data(), y.data(), B, T);
      CHECK(b.loss == doctest::Approx(a.loss).epsilon(1e-5));
      CHECK(b.grad_norm == doctest::Approx(a.grad_norm).epsilon(1e-4));
    }
    const std::vector<float> ma = plain.memory(), mb = accum.memory();
    REQUIRE(ma.size() == mb.size());
    for (size_t i = 0; i < ma.size(); ++i) REQUIRE(mb[i] == doctest::Approx(ma[i]).epsilon(1e-3));
    // The split and the join are inverses, block by block.
    const int64_t rows = plain.memory_rows();
    std::vector<float> blocks;
    for (int64_t k = 0; k < 4; ++k) {
      const std::vector<float> part = select_streams(*one, ma, B, rows, 2 * k, 2);
      blocks.insert(blocks.end(), part.begin(), part.end());
    }
    CHECK(join_streams(*one, blocks, 4, 2, rows) == ma);
    accum.set_memory(ma, B, rows);
    CHECK(accum.memory() == ma);
    CHECK_THROWS_WITH(accum.step(x.data(), y.data(), 6, T), doctest::Contains("batch size changed"));
    accum.reset_memory();
    CHECK_THROWS_WITH(accum.step(x.data(), y.data(), 6, T), doctest::Contains("do not split into grad_accum 4"));
  }
}

// Activation checkpointing (train.recompute): each window (the baseline: each layer) recomputed
// in the backward gives the same floats as keeping every activation: losses, gradient norms,
// weights and memory after several steps, bit for bit, for every detachment policy, windows of
// one and of several steps, shared and per-layer projections, with dropout drawing in both.
TEST_CASE("train: recompute gives the same floats as keeping every activation, for every policy") {
  struct Case {
    const char* type;
    int64_t seq_len;
    bool shared_kv;
    const char* detach;
  };
  for (const Case& c : {Case{"feedback", 1, true, "none"}, Case{"feedback", 1, true, "all"},
                        Case{"feedback", 1, false, "horizon:2"}, Case{"feedback", 3, true, "every:3"},
                        Case{"feedback", 3, true, "horizon:3"}, Case{"feedback", 3, false, "none"},
                        Case{"transformer_xl", 1, false, "none"}}) {
    INFO(c.type, " seq_len ", c.seq_len, " shared_kv ", c.shared_kv, " detach ", c.detach);
    ModelConfig mc;
    mc.type = c.type, mc.num_tokens = 40, mc.dim = 32, mc.depth = 2, mc.heads = 2, mc.dim_head = 16, mc.mem_len = 8;
    mc.seq_len = c.seq_len, mc.shared_kv = c.shared_kv, mc.attn_dropout = 0.1f, mc.ff_dropout = 0.1f;
    auto kept = make_model(mc), again = make_model(mc);
    LoopConfig lc;
    lc.lr = 3e-3, lc.seed = 9, lc.detach = DetachPolicy::parse(c.detach, c.seq_len);
    TrainLoop plain(*kept, lc);
    lc.recompute = true;
    TrainLoop recomputing(*again, lc);
    const int64_t B = 4, T = 12;
    for (int step = 0; step < 4; ++step) {
      const auto x = tokens(B * T, 10 + step, 40), y = tokens(B * T, 20 + step, 40);
      const StepStats a = plain.step(x.data(), y.data(), B, T), b = recomputing.step(x.data(), y.data(), B, T);
      CHECK(b.loss == a.loss);
      CHECK(b.grad_norm == a.grad_norm);
    }
    const std::vector<float> wa = kept->params().values(), wb = again->params().values();
    CHECK(wa == wb);
    CHECK(plain.memory() == recomputing.memory());
  }
}

// No kernel's result depends on the thread count (every cross-row sum runs in a fixed order, the
// loss's included), so
// a process may change its team between steps (threads::share_cores) and a run may resume on
// another thread count, both bit for bit.
TEST_CASE("train: the thread count changes no bit") {
  struct Case {
    const char* type;
    int64_t seq_len;
  };
  for (const Case& c : {Case{"feedback", 1}, Case{"feedback", 4}, Case{"transformer_xl", 1}}) {
    INFO(c.type, " seq_len ", c.seq_len);
    ModelConfig mc;
    mc.type = c.type, mc.num_tokens = 300, mc.dim = 64, mc.depth = 2, mc.heads = 2, mc.dim_head = 32, mc.mem_len = 16;
    mc.seq_len = c.seq_len, mc.shared_kv = mc.type == "feedback", mc.attn_dropout = 0.1f, mc.ff_dropout = 0.1f;
    const int64_t B = 8, T = 16;
    std::vector<std::vector<float>> weights;
    std::vector<std::vector<double>> losses;  // as logged: the same as thread-independent as the weights
    threads::set_sharing(false);  // the team is the test's to set
    for (int threads : {1, 3}) {
      const int saved = omp_get_max_threads();
      omp_set_num_threads(threads);
      auto model = make_model(mc);
      LoopConfig lc;
      lc.lr = 3e-3, lc.seed = 4;
      TrainLoop loop(*model, lc);
      losses.emplace_back();
      for (int step = 0; step < 3; ++step) {
        const auto x = tokens(B * T, 10 + step, 300), y = tokens(B * T, 20 + step, 300);
        losses.back().push_back(loop.step(x.data(), y.data(), B, T).loss);
      }
      omp_set_num_threads(saved);
      weights.push_back(model->params().values());
    }
    threads::set_sharing(true);
    CHECK(weights[0] == weights[1]);
    CHECK(losses[0] == losses[1]);
  }
}

// train.target_accuracy: a labelled run ends at the first evaluation that reaches it, with that
// step's weights as the final ones; --resume then does nothing, unless the target is lowered to 0
// (or raised), when the run trains on from there.
TEST_CASE("train: target_accuracy ends a labelled run at the first evaluation that reaches it") {
  TempDir d;
  // Each position's label is the token before it: learned through the memory in some steps.
  std::string text, labels = "_";
  uint32_t x = 7;
  for (int i = 0; i < 1200; ++i) {
    x = x * 1103515245u + 12345u;
    const std::string token(1, char('a' + (x >> 16) % 4));
    text += token + (i % 8 == 7 ? "\n" : " ");
    if (i + 1 < 1200) labels += (i % 8 == 7 ? "\n" : " ") + token;
  }
  labels += "\n";
  write_bytes(d / "vocab.txt", "a\nb\nc\nd\n", 8);
  write_bytes(d / "t.txt", text.data(), text.size());
  write_bytes(d / "t.txt.labels", labels.data(), labels.size());
  const std::string data = "data:\n  format: text\n  vocab: " + d / "vocab.txt" + "\n  labels: true\n  train: " +
                           d / "t.txt" + "\n  valid: " + d / "t.txt" + "\n";
  std::ofstream(d / "run.yaml") << "model:\n  num_tokens: 4\n  dim: 16\n  depth: 1\n  heads: 2\n  dim_head: 8\n"
                                   "  mem_len: 4\n"
                                << data
                                << "train:\n  batch_size: 4\n  bptt: 8\n  steps: 300\n  warmup: 0\n  lr: 0.01\n"
                                   "  schedule: constant\n  eval_every: 5\n  eval_tokens: 128\n  checkpoint_every: 50\n"
                                   "  sample_tokens: 0\n  threads: 1\n  target_accuracy: 0.9\n  out_dir: "
                                << (d / "out") << "\n";
  int64_t stopped = 0;
  {
    Trainer first(load_run_config(d / "run.yaml"));
    REQUIRE(first.run(false));
    stopped = first.step();
  }
  CHECK(stopped > 5);  // not at the first evaluation: the ones before stayed below the target
  CHECK(stopped < 300);
  CHECK(stopped % 5 == 0);
  const std::vector<float> weights = final_weights(d / "out");
  const TrainingState state = load_training_state(latest_checkpoint(d / "out"));
  CHECK(state.step == stopped);
  CHECK(state.valid_accuracy >= 0.9);
  {
    Trainer again(load_run_config(d / "run.yaml"));  // --resume: nothing left to do
    REQUIRE(again.run(true));
    CHECK(again.step() == stopped);
  }
  CHECK(final_weights(d / "out") == weights);
  Trainer on(load_run_config(d / "run.yaml", {"train.target_accuracy=0", "train.steps=" + std::to_string(stopped + 3)}));
  REQUIRE(on.run(true));
  CHECK(on.step() == stopped + 3);
}
