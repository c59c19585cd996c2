// What fbt promises about its files and runs (docs/RELIABILITY.md): one run per out_dir, files
// that verify themselves, write failures reported with nothing half-written left behind, and
// non-finite steps that never reach the weights.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <csignal>
#include <filesystem>
#include <fstream>

#include "models/feedback_transformer.hpp"
#include "models/weights.hpp"
#include "run_fixture.hpp"
#include "train/checkpoint.hpp"
#include "train/trainer.hpp"
#include "util/run_lock.hpp"
#include "util/files.hpp"
#include "util/safetensors.hpp"

using namespace fbt;
using namespace fbt::testing;
namespace fs = std::filesystem;

namespace {

// Flips one bit of a file at `offset` from its end (inside the data buffer for any offset smaller
// than the data).
void flip_bit_from_end(const std::string& path, size_t offset) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(-std::streamoff(offset), std::ios::end);
  char c;
  f.get(c);
  f.seekp(-std::streamoff(offset), std::ios::end);
  f.put(char(c ^ 0x10));
}

// A parameter's first value: a NaN there (layer 0's feed-forward output bias) reaches every
// position's hidden state, so the loss, every gradient and the memory.
float& first_value(ParamStore& ps, const std::string& name) {
  for (size_t i = 0; i < ps.size(); ++i)
    if (ps.names()[i] == name) return ps.values()[ps.offset(i)];
  FAIL("no parameter " << name);
  return ps.values()[0];
}
constexpr const char* kPoisoned = "layers.0.ff.w_out.bias";

}  // namespace

TEST_CASE("reliability: a second holder of an out_dir's lock is refused by name, the lock ends with its holder") {
  TempDir d;
  {
    RunLock first(d.path.string(), "train.out_dir x");
    CHECK_THROWS_WITH(RunLock(d.path.string(), "train.out_dir x"),
                      doctest::Contains(("train.out_dir x is in use by another run (pid " + std::to_string(::getpid())).c_str()));
  }
  CHECK_NOTHROW(RunLock(d.path.string(), "train.out_dir x"));  // released with its holder

  // A holder killed with SIGKILL leaves no lock behind: the kernel drops it with the process.
  int ready[2];
  REQUIRE(::pipe(ready) == 0);
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    RunLock held(d.path.string(), "x");
    const char c = 1;
    if (::write(ready[1], &c, 1) != 1) ::_exit(1);
    ::pause();
    ::_exit(0);
  }
  char c;
  REQUIRE(::read(ready[0], &c, 1) == 1);
  CHECK_THROWS_WITH(RunLock(d.path.string(), "x"), doctest::Contains(("(pid " + std::to_string(child) + " on ").c_str()));
  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);
  CHECK_NOTHROW(RunLock(d.path.string(), "x"));
  ::close(ready[0]), ::close(ready[1]);
}

TEST_CASE("reliability: a run on an out_dir another run holds fails at once, resume or not") {
  TempDir d;
  RunConfig c = load_run_config(write_config(d));
  fs::create_directories(d / "out");
  RunLock other(d / "out", "another run");
  CHECK_THROWS_WITH(Trainer(c).run(false), doctest::Contains("is in use by another run"));
  CHECK_THROWS_WITH(Trainer(c).run(true), doctest::Contains("is in use by another run"));
  CHECK_FALSE(fs::exists(d / "out/checkpoints"));
}

TEST_CASE("reliability: safetensors files record a checksum of header and data; one flipped bit is refused") {
  TempDir d;
  SafeTensors st;
  const std::vector<float> w(64, 0.5f);
  st.tensors["w"] = StTensor::from_f32({8, 8}, w.data());
  st.metadata["note"] = "abc";
  st.save(d / "a.safetensors");
  const SafeTensors back = SafeTensors::load(d / "a.safetensors");
  CHECK(back.verified);
  CHECK(back.metadata.size() == 1);  // the checksum is not handed on as metadata
  CHECK(back.serialize() == st.serialize());

  const std::string file = read_file(d / "a.safetensors");
  const std::vector<uint8_t> bytes(file.begin(), file.end());
  for (size_t at : {size_t(5), size_t(100), size_t(256)}) {  // data buffer
    std::vector<uint8_t> bad = bytes;
    bad[bad.size() - at] ^= 0x01;
    CHECK_THROWS_WITH(SafeTensors::parse(bad, "f"), doctest::Contains("f: checksum mismatch"));
  }
  const std::string text(bytes.begin(), bytes.end());
  std::vector<uint8_t> meta = bytes;  // the metadata is covered too
  meta[text.find("abc") + 2] = 'd';
  CHECK_THROWS_WITH(SafeTensors::parse(meta, "f"), doctest::Contains("checksum mismatch"));

  // A file without a checksum (written by another tool, or by fbt before it recorded them) loads,
  // unverified.
  const std::string header = R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  std::vector<uint8_t> plain(8 + header.size() + 8, 0);
  plain[0] = uint8_t(header.size());
  std::copy(header.begin(), header.end(), plain.begin() + 8);
  const SafeTensors old = SafeTensors::parse(plain, "old");
  CHECK_FALSE(old.verified);
  CHECK(old.at("w").shape == std::vector<int64_t>{2});
}

TEST_CASE("reliability: resume skips a damaged checkpoint by name and continues bit-identically from the one before") {
  TempDir a, b;
  Trainer(load_run_config(write_config(a))).run(false);
  RunConfig c = load_run_config(write_config(b));
  Trainer(c).run(false, 7);  // checkpoints at 6 and 7 (keep_last 2)
  const std::string ck = b / "out/checkpoints";
  flip_bit_from_end(ck + "/step_00000007/model.safetensors", 40);
  CHECK_THROWS_WITH(load_model(ck + "/step_00000007"), doctest::Contains("step_00000007/model.safetensors: checksum mismatch"));
  CHECK(Trainer(c).run(true));
  CHECK(final_weights(a / "out") == final_weights(b / "out"));

  // Nothing intact to resume from is an error, not a silent start from step 0.
  for (const std::string& dir : Checkpoints(b / "out").complete()) flip_bit_from_end(dir + "/state.safetensors", 12);
  CHECK_THROWS_WITH(Trainer(c).run(true), doctest::Contains("loads intact"));
}

TEST_CASE("reliability: a checkpoint that cannot be written is an error; it leaves nothing behind and earlier ones intact") {
  TempDir d;
  RunConfig c = load_run_config(write_config(d));
  Trainer(c).run(false, 3);
  std::signal(SIGXFSZ, SIG_IGN);  // as fbt's main does: the write fails with EFBIG instead
  rlimit old{};
  REQUIRE(::getrlimit(RLIMIT_FSIZE, &old) == 0);
  rlimit small = old;
  small.rlim_cur = 8192;  // metrics and config fit; the weights (16 KB of embeddings) do not
  REQUIRE(::setrlimit(RLIMIT_FSIZE, &small) == 0);
  std::string error;
  try {
    Trainer(c).run(true);
  } catch (const std::exception& e) {
    error = e.what();
  }
  ::setrlimit(RLIMIT_FSIZE, &old);
  std::signal(SIGXFSZ, SIG_DFL);
  CHECK(error.find("checkpoint of step 6 not saved (earlier ones are intact)") != std::string::npos);
  CHECK(error.find("File too large") != std::string::npos);
  std::vector<std::string> left;
  for (const auto& e : fs::directory_iterator(d / "out/checkpoints")) left.push_back(e.path().filename().string());
  CHECK(left == std::vector<std::string>{"step_00000003"});
  CHECK(load_checked(d / "out/checkpoints/step_00000003/model.safetensors").verified);
  CHECK(Trainer(c).run(true));  // and the run goes on once there is room
}

TEST_CASE("reliability: a non-finite step never reaches the weights; stop names the parameter, skip counts and goes on") {
  TempDir d;
  SUBCASE("stop (the default) ends the run naming the step and the first parameter") {
    RunConfig c = load_run_config(write_config(d));
    Trainer t(c);
    ParamStore& ps = t.model().params();
    first_value(ps, kPoisoned) = NAN;
    const std::vector<float> before = ps.values();
    CHECK_THROWS_WITH(t.run(false), doctest::Contains(
                                         ("step 1: loss nan, gradient norm nan (first non-finite gradient: " + ps.names()[0] + ")").c_str()));
    for (size_t i = 0; i < before.size(); ++i)  // untouched: no update ran
      if (!std::isnan(before[i])) REQUIRE(before[i] == ps.values()[i]);
  }
  SUBCASE("skip stops after skip_limit in a row") {
    RunConfig c = load_run_config(write_config(d, "  on_nonfinite: skip\n  skip_limit: 3\n"));
    Trainer t(c);
    first_value(t.model().params(), kPoisoned) = NAN;
    std::string error;
    try {
      t.run(false);
    } catch (const std::exception& e) {
      error = e.what();
    }
    CHECK(error.rfind("step 3: loss nan", 0) == 0);
    CHECK(error.find("3 steps in a row skipped (train.skip_limit)") != std::string::npos);
    const std::string metrics = d / "out/metrics.jsonl";
    CHECK(read_file(metrics).find("\"skipped\":2") != std::string::npos);
  }
  SUBCASE("a skipped step counts in the schedule, not in the optimizer") {
    RunConfig c = load_run_config(write_config(d));
    FeedbackTransformer model(c.model);
    model.init(1);
    TrainLoop loop(model, loop_config(c));
    std::vector<int32_t> x(3 * 7, 5), y(3 * 7, 6);
    float& w = first_value(model.params(), kPoisoned);
    const float kept = w;
    w = NAN;
    StepStats s = loop.step(x.data(), y.data(), 3, 7);
    CHECK(s.skipped);
    CHECK(loop.steps_done() == 1);
    CHECK(loop.optimizer().steps_taken() == 0);
    CHECK(loop.memory_rows() == 0);  // the memory it left was not finite: reset
    w = kept;
    s = loop.step(x.data(), y.data(), 3, 7);
    CHECK_FALSE(s.skipped);
    CHECK(std::isfinite(s.loss));
    CHECK(loop.optimizer().steps_taken() == 1);
  }
}

TEST_CASE("reliability: first_nonfinite_gradient names the first parameter holding a NaN or an infinity") {
  TempDir d;
  RunConfig c = load_run_config(write_config(d));
  FeedbackTransformer model(c.model);
  ParamStore& ps = model.params();
  ps.zero_grad();
  CHECK(first_nonfinite_gradient(ps).empty());
  ps.grads()[ps.offset(3) + 1] = INFINITY;
  ps.grads()[ps.offset(5)] = NAN;
  CHECK(first_nonfinite_gradient(ps) == ps.names()[3]);
}

TEST_CASE("a run that takes its out_dir removes the temporary files a killed writer left, and nothing else") {
  const TempDir scratch;
  const fs::path dir = scratch.path;
  fs::create_directories(dir / "sub.tmp.7");
  for (const char* name : {"config.yaml.tmp.4242", "model.safetensors.tmp.1", "notes.tmp.txt", "x.tmp.", "x.tmp.12a",
                           "model.safetensors", "sub.tmp.7/y.tmp.9"})
    std::ofstream(dir / name) << "x";
  remove_stale_temporaries(dir.string());
  CHECK_FALSE(fs::exists(dir / "config.yaml.tmp.4242"));
  CHECK_FALSE(fs::exists(dir / "model.safetensors.tmp.1"));
  for (const char* kept : {"notes.tmp.txt", "x.tmp.", "x.tmp.12a", "model.safetensors", "sub.tmp.7/y.tmp.9"})
    CHECK_MESSAGE(fs::exists(dir / kept), kept);
}

TEST_CASE("a lock file's holder text reaches the message only as 200 printable bytes of its first line") {
  const TempDir scratch;
  const fs::path dir = scratch.path;
  const std::string path = (dir / ".fbt-lock").string();
  {
    std::ofstream out(path);
    out << "pid 1 \x1b[31mred\x07" << std::string(500, 'x') << "\nsecond line";
  }
  const int fd = ::open(path.c_str(), O_RDWR);
  REQUIRE(fd >= 0);
  REQUIRE(::flock(fd, LOCK_EX) == 0);  // held, as by another run
  try {
    RunLock lock(dir.string(), "train.out_dir x");
    FAIL("the lock was taken twice");
  } catch (const FileError& e) {
    const std::string msg = e.what();
    CHECK(msg.find("pid 1 ?[31mred?xxx") != std::string::npos);
    CHECK(msg.find("second line") == std::string::npos);
    CHECK(msg.find('\x1b') == std::string::npos);
    CHECK(msg.size() < 400);
  }
  ::close(fd);
}

TEST_CASE("a run stopped after its last checkpoint and final evaluation resumes without a second valid line") {
  // The soak's finding: stopped between the last step's checkpoint and the final weights, the
  // resumed run evaluated again and metrics.jsonl held the last valid line twice.
  TempDir d;
  const std::string cfg = write_config(d, "", "");
  for (const char* when : {"8", "6"}) {  // eval_every divides steps (the eval precedes the checkpoint), or not
    INFO("eval_every " << when);
    const RunConfig c = load_run_config(cfg, {"train.steps=9", std::string("train.eval_every=") + when,
                                              "train.out_dir=" + (d / (std::string("out") + when))});
    Trainer(c).run(false);
    const std::string out = c.train.out_dir;
    auto valid_lines = [&] {
      std::ifstream in(out + "/metrics.jsonl");
      std::string line;
      int n = 0;
      while (std::getline(in, line)) n += line.find("\"split\":\"valid\"") != std::string::npos &&
                                          line.find("\"step\":9") != std::string::npos;
      return n;
    };
    REQUIRE(valid_lines() == 1);
    fs::remove(out + "/model.safetensors");  // as if killed before the final weights were written
    Trainer(c).run(true);
    CHECK(valid_lines() == 1);
    CHECK(fs::exists(out + "/model.safetensors"));
  }
}
