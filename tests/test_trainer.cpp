// The trainer and evaluation: loss independent of the call length, out_dir checked first.
#include <doctest/doctest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>

#include "models/feedback_transformer.hpp"
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
