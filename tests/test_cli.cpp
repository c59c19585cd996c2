// The fbt binary end to end: `forward` against the in-process model, and bad input of every
// kind getting one clear message and a non-zero exit.
#include <doctest/doctest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "models/config.hpp"
#include "models/feedback_transformer.hpp"
#include "models/weights.hpp"
#include "train/config.hpp"
#include "util/safetensors.hpp"

#include "run_fixture.hpp"

using namespace fbt;
using namespace fbt::testing;
namespace fs = std::filesystem;

namespace {

struct Run {
  int status;
  std::string output;  // stdout and stderr
};

// Runs fbt with args; the output is stdout and stderr unless args redirect stderr themselves.
Run fbt_cli(const std::string& args, bool with_stderr = true) {
  const std::string cmd = std::string(FBT_BIN) + " " + args + (with_stderr ? " 2>&1" : "");
  Run r{0, ""};
  FILE* p = ::popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  std::array<char, 4096> buf{};
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), p)) > 0) r.output.append(buf.data(), n);
  r.status = ::pclose(p);
  return r;
}


const char* kModelYaml =
    "model:\n  num_tokens: 11\n  dim: 8\n  depth: 2\n  heads: 2\n  dim_head: 4\n  seq_len: 2\n  mem_len: 5\n"
    "  shared_kv: false\n";

// d/bench.yaml: the small model, a token file bench does not read (it draws its own tokens),
// train: {batch_size: 2, bptt: 6, <train_keys>}.
void write_bench_config(const TempDir& d, const std::string& train_keys) {
  const std::vector<uint16_t> ids(32, 3);
  std::ofstream(d / "tokens.bin", std::ios::binary).write(reinterpret_cast<const char*>(ids.data()), 64);
  std::ofstream(d / "bench.yaml") << kModelYaml << "data: {format: u16, train: " << d / "tokens.bin"
                                  << ", valid: " << d / "tokens.bin" << "}\n"
                                  << "train: {batch_size: 2, bptt: 6, " << train_keys << "}\n";
}

}  // namespace

TEST_CASE("cli: forward writes logits loss memory and gradients as the library computes them") {
  TempDir d;
  std::ofstream(d / "m.yaml") << kModelYaml;
  ModelConfig cfg = load_model_config(d / "m.yaml");
  FeedbackTransformer model(cfg);
  model.init(5);
  weights_to_safetensors(model).save(d / "w.safetensors");
  const int64_t B = 2, T = 5, m = 3;
  std::vector<int64_t> in64, tg64;
  std::vector<int32_t> in32, tg32;
  for (int64_t i = 0; i < B * T; ++i) {
    in64.push_back((i * 3) % 11), tg64.push_back((i * 7 + 1) % 11);
    in32.push_back(int32_t(in64.back())), tg32.push_back(int32_t(tg64.back()));
  }
  std::vector<float> mem(size_t(B * m * 8));
  for (size_t i = 0; i < mem.size(); ++i) mem[i] = float(i % 7) * 0.1f - 0.3f;
  SafeTensors batch;
  auto i64 = [](const std::vector<int64_t>& v) {
    return StTensor{"I64", {2, 5}, std::vector<uint8_t>((const uint8_t*)v.data(), (const uint8_t*)v.data() + v.size() * 8)};
  };
  batch.tensors["inputs"] = i64(in64);
  batch.tensors["targets"] = i64(tg64);
  batch.tensors["memory"] = StTensor::from_f32({B, m, 8}, mem.data());
  batch.save(d / "x.safetensors");

  Run r = fbt_cli("forward --config " + d / "m.yaml" + " --weights " + d / "w.safetensors" + " --batch " +
                  d / "x.safetensors" + " --out " + d / "o.safetensors --grads --detach horizon:2");
  INFO(r.output);
  REQUIRE(r.status == 0);
  SafeTensors out = SafeTensors::load(d / "o.safetensors");

  tape().reset();
  State state(Tensor{mem.data(), Shape{B, m, 8}, Device::CPU});
  ForwardOutput o = model.forward(in32.data(), B, T, &state, {Var(), tg32.data(), DetachPolicy::parse("horizon:2", 2)});
  model.params().zero_grad();
  tape().backward(o.loss);
  CHECK(out.at("logits").shape == std::vector<int64_t>{2, 5, 11});
  CHECK(out.at("logits").to_f32("l") == std::vector<float>(o.logits.data(), o.logits.data() + 110));
  CHECK(out.at("loss").to_f32("loss")[0] == o.loss.data()[0]);
  CHECK(out.at("memory").shape == std::vector<int64_t>{2, 5, 8});
  CHECK(out.at("memory").to_f32("m") == std::vector<float>(o.memory.data, o.memory.data + o.memory.numel()));
  for (size_t i = 0; i < model.params().size(); ++i) {
    const std::string name = model.params().names()[i];
    Var p = model.params().at(i);
    CHECK(out.at("grad." + name).to_f32(name) == std::vector<float>(p.grad().data, p.grad().data + p.value().numel()));
  }
}

TEST_CASE("cli: bad input gets one clear error and a non-zero exit") {
  TempDir d;
  std::ofstream(d / "m.yaml") << kModelYaml;
  FeedbackTransformer model(load_model_config(d / "m.yaml"));
  SafeTensors w = weights_to_safetensors(model);
  w.save(d / "w.safetensors");
  int32_t ids[4] = {1, 2, 3, 4};
  SafeTensors batch;
  batch.tensors["inputs"] = StTensor::from_i32({1, 4}, ids);
  batch.tensors["targets"] = StTensor::from_i32({1, 4}, ids);
  batch.save(d / "x.safetensors");
  const std::string fwd = "forward --config " + d / "m.yaml" + " --batch " + d / "x.safetensors" + " --out " + d / "o.st";

  Run r = fbt_cli(fwd + " --weights " + d / "w.safetensors" + " --detach every:3");
  CHECK(r.status != 0);
  CHECK(r.output.find("--detach: detach policy 'every:3': N = 3 is not a multiple of seq_len = 2") != std::string::npos);

  SafeTensors missing = w;
  missing.tensors.erase("layers.1.attn.to_kv.weight");
  missing.save(d / "missing.safetensors");
  r = fbt_cli(fwd + " --weights " + d / "missing.safetensors");
  CHECK(r.status != 0);
  CHECK(r.output.find("missing tensor 'layers.1.attn.to_kv.weight'") != std::string::npos);

  std::ofstream(d / "garbage.safetensors") << "not a safetensors file at all";
  r = fbt_cli(fwd + " --weights " + d / "garbage.safetensors");
  CHECK(r.status != 0);
  CHECK(r.output.find("fbt: error:") != std::string::npos);

  int32_t big[4] = {1, 2, 30, 4};
  batch.tensors["inputs"] = StTensor::from_i32({1, 4}, big);
  batch.save(d / "big.safetensors");
  r = fbt_cli("forward --config " + d / "m.yaml" + " --weights " + d / "w.safetensors" + " --batch " +
              d / "big.safetensors --out " + d / "o.st");
  CHECK(r.status != 0);
  CHECK(r.output.find("outside [0, num_tokens=11)") != std::string::npos);

  std::vector<float> wrong_mem(2 * 3 * 8, 0.f);
  batch.tensors["inputs"] = StTensor::from_i32({1, 4}, ids);
  batch.tensors["memory"] = StTensor::from_f32({2, 3, 8}, wrong_mem.data());  // B = 2 for 1 row of inputs
  batch.save(d / "mem.safetensors");
  r = fbt_cli("forward --config " + d / "m.yaml" + " --weights " + d / "w.safetensors" + " --batch " +
              d / "mem.safetensors --out " + d / "o.st");
  CHECK(r.status != 0);
  CHECK(r.output.find("memory must be [B=1, m <= mem_len=5, D=8]") != std::string::npos);

  // Training config errors and corpora.
  const uint8_t odd[3] = {1, 2, 3};
  std::ofstream(d / "odd.bin", std::ios::binary).write((const char*)odd, 3);
  std::ofstream(d / "run.yaml") << "model: {num_tokens: 300, dim: 8, depth: 1, heads: 1, dim_head: 8, mem_len: 4}\n"
                                << "data: {format: u16, train: " << d / "odd.bin" << ", valid: " << d / "odd.bin"
                                << "}\ntrain: {steps: 2, out_dir: " << d / "out" << "}\n";
  r = fbt_cli("train " + d / "run.yaml");
  CHECK(r.status != 0);
  CHECK(r.output.find("odd.bin: size 3 bytes is not a multiple of 2") != std::string::npos);
  r = fbt_cli("train " + d / "run.yaml --set train.bptt=-4");
  CHECK(r.status != 0);
  CHECK(r.output.find("train.bptt: must be >= 1, got -4") != std::string::npos);
  r = fbt_cli("train " + d / "run.yaml --set train.optimizer=sgd");
  CHECK(r.status != 0);
  CHECK(r.output.find("train.optimizer: unknown key") != std::string::npos);
  r = fbt_cli("train " + d / "run.yaml --set train.device=gpu");
  CHECK(r.status != 0);
  CHECK(r.output.find("train.device: unknown device 'gpu' (expected cpu or cuda)") != std::string::npos);
  r = fbt_cli("train " + d / "nope.yaml");
  CHECK(r.status != 0);
  r = fbt_cli("sample --checkpoint " + d / "nothing-here");
  CHECK(r.status != 0);
  CHECK(r.output.find("cannot open") != std::string::npos);
}

TEST_CASE("cli: version says which backends are compiled in") {
  Run r = fbt_cli("--version");
  CHECK(r.status == 0);
  CHECK(r.output.find("backends: cpu") != std::string::npos);
}

// calls_per_step of one op and phase in a bench --profile JSON line (0 when absent).
double calls_per_step(const nlohmann::json& j, const std::string& op, const std::string& phase) {
  for (const auto& row : j.at("profile"))
    if (row.at("op") == op && row.at("phase") == phase) return row.at("calls_per_step").get<double>();
  return 0;
}

TEST_CASE("cli: bench needs no data section (it draws random tokens), times recompute too, and sampling on request") {
  TempDir d;
  std::ofstream(d / "bench.yaml") << kModelYaml << "train: {batch_size: 2, bptt: 6, threads: 1, recompute: true}\n";
  std::ofstream(d / "plain.yaml") << kModelYaml << "train: {batch_size: 2, bptt: 6, threads: 1, recompute: false}\n";
  const Run r = fbt_cli("bench --config " + d / "bench.yaml" + " --steps 2 --profile", false);
  const Run plain = fbt_cli("bench --config " + d / "plain.yaml" + " --steps 2 --profile", false);
  INFO(r.output);
  REQUIRE(r.status == 0);
  REQUIRE(plain.status == 0);
  const nlohmann::json j = nlohmann::json::parse(r.output), k = nlohmann::json::parse(plain.output);
  CHECK(j.at("tokens_per_s").get<double>() > 0);
  CHECK_FALSE(j.contains("sample_tokens_per_s"));
  // recompute runs the windows' forward again in the backward: more forward products, the same backward
  CHECK(calls_per_step(j, "linear", "forward") > calls_per_step(k, "linear", "forward"));
  CHECK(calls_per_step(j, "linear", "backward") == calls_per_step(k, "linear", "backward"));
  // --sample: the speed of sampling at batch 1 too
  const Run s = fbt_cli("bench --config " + d / "bench.yaml" + " --steps 1 --sample 20", false);
  INFO(s.output);
  REQUIRE(s.status == 0);
  CHECK(nlohmann::json::parse(s.output).at("sample_tokens_per_s").get<double>() > 0);
  const Run e = fbt_cli("bench --config " + d / "bench.yaml" + " --sample -1");
  CHECK(e.status != 0);
  CHECK(e.output.find("--sample") != std::string::npos);
}

// FLOPs of one bench step, from its JSON line (gflops x step time).
double step_flops_of(const Run& r) {
  const nlohmann::json j = nlohmann::json::parse(r.output);
  return j.at("gflops").get<double>() * j.at("step_ms").get<double>() * 1e6;
}

TEST_CASE("cli: bench starts from train.init_from's weights, and its FLOPs count only the memory the spans read") {
  TempDir d;
  const std::string model = "model: {num_tokens: 11, dim: 8, depth: 2, heads: 2, dim_head: 4, seq_len: 1, mem_len: 48";
  const std::string train = "train: {batch_size: 2, bptt: 6, threads: 1}\n";
  std::ofstream(d / "span.yaml") << model << ", adapt_span: true, adapt_span_ramp: 2, adapt_span_init: 0}\n" << train;
  std::ofstream(d / "fixed.yaml") << model << "}\n" << train;
  // the same model with every span whole (z = 1): it reads the whole memory
  const RunConfig cfg = load_run_config(d / "span.yaml", {}, /*require_data=*/false);
  auto wide = make_model(cfg.model);
  wide->init(1, "gpt2");
  for (int64_t l = 0; l < cfg.model.depth; ++l) {
    Var z = wide->params().get("layers." + std::to_string(l) + ".attn.span");
    std::fill_n(z.data(), z.value().numel(), 1.f);
  }
  save_model(*wide, d / "wide.safetensors");
  const Run narrow = fbt_cli("bench --config " + d / "span.yaml" + " --steps 1", false);
  const Run whole =
      fbt_cli("bench --config " + d / "span.yaml" + " --steps 1 --set train.init_from=" + d / "wide.safetensors", false);
  const Run fixed = fbt_cli("bench --config " + d / "fixed.yaml" + " --steps 1", false);
  INFO(narrow.output << whole.output << fixed.output);
  REQUIRE(narrow.status == 0);
  REQUIRE(whole.status == 0);
  REQUIRE(fixed.status == 0);
  CHECK(step_flops_of(whole) == doctest::Approx(step_flops_of(fixed)).epsilon(1e-9));  // whole spans: all of mem_len
  CHECK(step_flops_of(narrow) < 0.9 * step_flops_of(whole));  // spans at the ramp alone: a few steps back
  const Run missing = fbt_cli("bench --config " + d / "span.yaml" + " --set train.init_from=" + d / "none.safetensors");
  CHECK(missing.status != 0);
  CHECK(missing.output.find("none.safetensors") != std::string::npos);
}

TEST_CASE("cli: out of memory is one line naming the size that failed and what to change") {
#if defined(__SANITIZE_ADDRESS__)
  MESSAGE("AddressSanitizer reserves more address space than the limit allows: skipped");
#else
  TempDir d;  // a step of ~300 MB of activations under a 400 MB address-space limit
  std::ofstream(d / "big.yaml") << "model: {num_tokens: 256, dim: 512, depth: 6, heads: 8, dim_head: 64, seq_len: 32, "
                                   "mem_len: 256}\ntrain: {batch_size: 8, bptt: 128, threads: 1}\n";
  const std::string cmd = "ulimit -v 400000; exec " + std::string(FBT_BIN) + " bench --config " + d / "big.yaml" +
                          " --steps 1 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  std::string out;
  std::array<char, 4096> buf{};
  for (size_t n; (n = std::fread(buf.data(), 1, buf.size(), p)) > 0;) out.append(buf.data(), n);
  const int status = ::pclose(p);
  INFO(out);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 1);
  CHECK(out.find("fbt: error: out of memory: could not allocate ") != std::string::npos);
  CHECK(out.find(" MB on the cpu; ") != std::string::npos);
  CHECK(out.find("train.recompute: true") != std::string::npos);
  CHECK(std::count(out.begin(), out.end(), '\n') == 1);  // one line
#endif
}

TEST_CASE("cli: bench prints one JSON line of figures; --profile adds op rows that cover the step") {
  TempDir d;
  write_bench_config(d, "threads: 1");
  const Run r = fbt_cli("bench --config " + d / "bench.yaml" + " --steps 3 --profile 2>" + d / "table.txt", false);
  INFO(r.output);
  REQUIRE(r.status == 0);
  const nlohmann::json j = nlohmann::json::parse(r.output);
  for (const char* key : {"tokens_per_s", "step_ms", "peak_rss_mb", "gflops", "sgemm_peak_gflops", "fraction_of_peak"})
    CHECK(j.at(key).get<double>() > 0);
  CHECK(j.at("tokens_per_s").get<double>() == doctest::Approx(12 / (j.at("step_ms").get<double>() / 1000)));
  CHECK(j.at("gemm").get<std::string>().rfind("fbt panels", 0) == 0);  // the product kernels, by name
  CHECK(j.at("team_shrinks").get<int>() >= 0);
  double linear_fwd = 0, attention_bwd = 0, adamw = 0, total = 0;
  for (const auto& r : j.at("profile")) {
    const std::string op = r.at("op"), phase = r.at("phase");
    const double ms = r.at("ms_per_step");
    total += ms;
    if (op == "linear" && phase == "forward") {
      linear_fwd = ms;
      CHECK(r.at("calls_per_step").get<double>() > 0);
    }
    if (op == "attention" && phase == "backward") attention_bwd = ms;
    if (op == "adamw" && phase == "optimizer") adamw = ms;
  }
  CHECK(linear_fwd > 0);
  CHECK(attention_bwd > 0);
  CHECK(adamw > 0);
  CHECK(total > 0);
  // rows count what ran: one loss and one optimizer update a step
  CHECK(calls_per_step(j, "adamw", "optimizer") == 1);
  CHECK(calls_per_step(j, "cross_entropy", "forward") == 1);
  CHECK(calls_per_step(j, "cross_entropy", "backward") == 1);
  std::ifstream table(d / "table.txt");
  const std::string text((std::istreambuf_iterator<char>(table)), std::istreambuf_iterator<char>());
  CHECK(text.find("ms/step") != std::string::npos);
  CHECK(text.find("(outside any op)") != std::string::npos);

  for (const char* bad : {"0", "2.5", "x"}) {  // the flag is named, with what it wants
    const Run e = fbt_cli("bench --config " + d / "bench.yaml" + " --steps " + bad);
    CHECK(e.status != 0);
    CHECK(e.output.find(std::string("--steps: must be a whole number >= 1, got ") + bad) != std::string::npos);
  }
}

TEST_CASE("cli: the cuda device trains where it is usable and is refused by name where it is not") {
  TempDir d;
  write_bench_config(d, "threads: 1, device: cuda");
  Run r = fbt_cli("bench --config " + d / "bench.yaml" + " --steps 2");
  const bool usable = fbt_cli("--version").output.find("device: ") != std::string::npos;
  INFO(r.output);
  if (usable) {  // a GPU machine: the step ran there
    CHECK(r.status == 0);
    CHECK(r.output.find("\"peak_device_mb\"") != std::string::npos);
  } else {
    CHECK(r.status != 0);
    CHECK(r.output.find("fbt: error: device cuda is not available: ") != std::string::npos);
  }
}

TEST_CASE("cli: compare says bit-identical weights are identical (exit 0) and names each tensor that differs (exit 1)") {
  TempDir d;
  const std::vector<float> w{1.f, 2.f, 3.f, 4.f}, b{0.5f, -0.5f};
  auto save = [&](const std::string& name, std::vector<float> wv, bool with_bias) {
    SafeTensors st;
    st.tensors["w"] = StTensor::from_f32({2, 2}, wv.data());
    if (with_bias) st.tensors["b"] = StTensor::from_f32({2}, b.data());
    st.save((d.path / name).string());
    return (d.path / name).string();
  };
  const std::string a = save("a.safetensors", w, true), same = save("same.safetensors", w, true);
  std::vector<float> w2 = w;
  w2[3] = std::nextafter(4.f, 5.f);  // one ulp
  const std::string other = save("other.safetensors", w2, true), fewer = save("fewer.safetensors", w, false);
  Run r = fbt_cli("compare " + a + " " + same);
  CHECK(r.status == 0);
  CHECK(r.output.find("identical: 2 tensors, 6 values, bit for bit") != std::string::npos);
  r = fbt_cli("compare " + a + " " + other);
  CHECK(WEXITSTATUS(r.status) == 1);
  CHECK(r.output.find("differs: w: 1 of 4 values, max |a - b| 4.77e-07") != std::string::npos);
  CHECK(r.output.find("different: 1 of 2 tensors differ") != std::string::npos);
  r = fbt_cli("compare " + a + " " + fewer);
  CHECK(WEXITSTATUS(r.status) == 1);
  CHECK(r.output.find("differs: b: only in " + a) != std::string::npos);
  fs::create_directories(d.path / "run");  // a run folder stands for its model.safetensors
  fs::copy_file(a, d.path / "run" / "model.safetensors");
  CHECK(fbt_cli("compare " + (d.path / "run").string() + " " + same).status == 0);
  r = fbt_cli("compare " + a + " " + (d.path / "missing.safetensors").string());
  CHECK(WEXITSTATUS(r.status) == 1);
  CHECK(r.output.find("fbt: error: ") != std::string::npos);
}
