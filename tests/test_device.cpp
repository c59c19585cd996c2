// The device path: every op, the model, the training loop, sampling and checkpoints run with
// their tensors on "cuda" and must agree with the CPU. Built twice: in the `device` suite on the
// emulated CUDA device (backend/cuda/emulated.cpp), which runs anywhere and whose device pointers
// fault when host code dereferences them, so a host access that would crash on a GPU crashes
// here too; and in the `cuda` suite on a real GPU, beside the kernel parity tests.
#include <doctest/doctest.h>

#include <cmath>
#include <functional>

#include "gradcheck.hpp"
#include "models/feedback_transformer.hpp"
#include "run_fixture.hpp"
#include "autograd/params.hpp"
#include "backend/cuda/kernels.hpp"
#include "ops/ops.hpp"
#include "train/loop.hpp"
#include "train/sample.hpp"
#include "train/trainer.hpp"

using namespace fbt;
using fbt::testing::check_close;
using fbt::testing::fill_normal;
using fbt::testing::sz;
using fbt::testing::tokens;

namespace {

// Runs f with this thread's tape on d, and leaves the tape empty on the CPU afterwards.
template <class F>
auto on(Device d, F f) {
  struct Restore {
    ~Restore() {
      tape().reset();
      tape().set_device(Device::CPU);
    }
  } restore;
  tape().reset();
  tape().set_device(d);
  return f();
}

std::vector<float> randn(size_t n, uint64_t seed, float scale = 1.f) {
  std::vector<float> v(n);
  fill_normal(v.data(), int64_t(n), seed, scale);
  return v;
}

bool emulated() { return cuda::device_name().find("emulated") != std::string::npos; }

// After optimizer steps: Adam divides by the gradients' running RMS, so an element whose gradient
// is ~0 can move by a whole step on one device and not the other; compare the whole state.
void check_close_overall(const std::vector<float>& dev, const std::vector<float>& cpu, double tol) {
  REQUIRE(dev.size() == cpu.size());
  double diff = 0, norm = 0;
  for (size_t i = 0; i < dev.size(); ++i) diff += (double(dev[i]) - cpu[i]) * (double(dev[i]) - cpu[i]), norm += double(cpu[i]) * cpu[i];
  INFO("relative difference of the norms " << std::sqrt(diff / norm));
  CHECK(std::sqrt(diff / norm) < tol);
}

// An op under test: builds its output from leaves made on the tape's device.
struct Case {
  const char* name;
  std::vector<std::pair<std::vector<float>, Shape>> inputs;
  std::function<Var(const std::vector<Var>&)> op;
};

// The op's output and every input's gradient under a fixed random seed gradient, on the host.
std::vector<std::vector<float>> run_case(const Case& c) {
  std::vector<Var> leaves;
  for (const auto& [values, shape] : c.inputs)
    leaves.push_back(tape().leaf_copy(Tensor{const_cast<float*>(values.data()), shape, Device::CPU}, true));
  Var y = c.op(leaves);
  std::vector<float> seed = randn(sz(y.value().numel()), 77);
  tape().backward(y, Tensor{seed.data(), y.shape(), Device::CPU});
  std::vector<std::vector<float>> out{to_host(y.value())};
  for (Var v : leaves) out.push_back(to_host(tape().grad(v)));
  return out;
}

ModelConfig small(int64_t seq_len, bool shared_kv, bool cross) {
  ModelConfig c;
  c.num_tokens = 11;
  c.dim = 8;
  c.depth = 2;
  c.heads = 2;
  c.dim_head = 4;
  c.ff_mult = 2;
  c.seq_len = seq_len;
  c.mem_len = 5;
  c.num_buckets = 6;
  c.max_distance = 12;
  c.shared_kv = shared_kv;
  c.cross_attend = cross;
  return c;
}


struct Call {
  std::vector<float> logits, memory, grads;
  float loss = 0;
};

// One recorded call with carried memory (and a context when the model cross-attends), then its
// backward; everything read back to the host.
Call forward_backward(FeedbackTransformer& model, const DetachPolicy& pol) {
  const ModelConfig& c = model.config();
  const int64_t B = 2, T = 9, m = 3;
  const std::vector<int32_t> in = tokens(B * T, 1, int32_t(c.num_tokens)), tg = tokens(B * T, 2, int32_t(c.num_tokens));
  std::vector<float> mem = randn(sz(B * m * c.dim), 3), ctx = randn(sz(B * 4 * c.dim), 4);
  State state(Tensor{mem.data(), Shape{B, m, c.dim}, Device::CPU});
  tape().set_device(model.device());  // the context is made on the tape the call runs on
  Var context = c.cross_attend ? tape().leaf_copy(Tensor{ctx.data(), Shape{B, 4, c.dim}, Device::CPU}) : Var();
  model.params().zero_grad();
  ForwardOutput o = model.forward(in.data(), B, T, &state, {context, tg.data(), pol});
  tape().backward(o.loss);
  model.params().sync_to_host();
  return {to_host(o.logits.value()), to_host(o.memory), model.params().grads(), to_host(o.loss.value())[0]};
}

}  // namespace

TEST_CASE("device: buffers round-trip, the emulation keeps host and device pointers apart, devices do not mix") {
  std::string why;
  REQUIRE(device_available(Device::CUDA, &why));
  DeviceBuffer d(Device::CUDA, 5);
  std::vector<float> h{1, 2, 3, 4, 5}, back(5);
  d.copy_from_host(h.data(), 5);
  DeviceBuffer copy = d;
  copy.copy_to_host(back.data());
  CHECK(back == h);
  if (emulated()) {  // a host pointer handed to a device kernel, or a device pointer to a host copy, is refused
    CHECK_THROWS_AS(cuda::axpy(h.data(), 1.f, d.data(), 5), std::logic_error);
    CHECK_THROWS_AS(cuda::copy(d.data(), d.data(), 4, cuda::CopyKind::HostToDevice), std::logic_error);
  }
  // Mixing devices in one op names both.
  ParamStore ps;  // parameters left on the CPU
  Var w = ps.add("w", {2, 3}, ParamRole::Matrix);
  ps.finalize();
  on(Device::CUDA, [&] {
    Var x = tape().leaf({2, 3});
    CHECK_THROWS_WITH_AS(add(x, w), doctest::Contains("input is on cpu, the tape on cuda"), std::invalid_argument);
    return 0;
  });
}

TEST_CASE("device: the GPU's limits hold on the emulated device too: a pitch below the row, overlapping rows, a foreign free, too many key segments, shared memory") {
  DeviceBuffer rows(Device::CUDA, 8);
  std::vector<float> h(8, 1.f);
  // cudaMemcpy2D refuses a pitch below the row's width (here 8-byte pitches for 16-byte rows).
  CHECK_THROWS(cuda::copy_2d(rows.data(), 8, h.data(), 8, 16, 2, cuda::CopyKind::HostToDevice));
  cuda::copy_2d(rows.data(), 16, h.data(), 16, 16, 2, cuda::CopyKind::HostToDevice);  // whole rows: fine
  if (emulated()) {  // what a GPU does not refuse but gets wrong, the emulation refuses
    // Rows that overlap their source: cudaMemcpy2D's result is undefined (bytes 8-40 from 0-32).
    DeviceBuffer wide(Device::CUDA, 32);
    const auto d2d = cuda::CopyKind::DeviceToDevice;
    CHECK_THROWS_WITH_AS(cuda::copy_2d(wide.data() + 2, 16, wide.data(), 16, 16, 2, d2d),
                         doctest::Contains("rows overlap"), std::invalid_argument);
    // Only the destination's first row meets the source's last (bytes 32-48).
    CHECK_THROWS_AS(cuda::copy_2d(wide.data() + 8, 16, wide.data(), 16, 16, 3, d2d), std::invalid_argument);
    cuda::copy_2d(wide.data() + 4, 32, wide.data(), 32, 16, 2, d2d);  // interleaved rows that do not meet
    cuda::copy_2d(wide.data() + 4, 16, wide.data(), 16, 16, 1, d2d);  // adjacent
    // Freeing what alloc did not return (here twice): reported and kept, never thrown.
    float* once = cuda::alloc(4);
    cuda::free(once);
    CHECK(cuda::free_error().empty());
    cuda::free(once);
    CHECK(cuda::free_error().find("freed twice") != std::string::npos);
  }
  // The kernels take at most kMaxAttentionSegments key/value segments, by value.
  KVRows segs[kMaxAttentionSegments + 1] = {};
  const AttentionDims dims{1, 1, 1, 8, 1};
  CHECK_THROWS_WITH_AS(cuda::attention_forward(rows.data(), rows.data(), rows.data(), segs, kMaxAttentionSegments + 1,
                                               nullptr, nullptr, nullptr, dims),
                       doctest::Contains("more than 4 key/value segments"), std::invalid_argument);
  // A block's shared memory: the scores of every key, on an H100/H200 at most 227 KB a block.
  const AttentionDims many_keys{1, 1, 1, 8, 60000};
  KVRows one[1] = {{rows.data(), nullptr, 0, 60000}};
  CHECK_THROWS_WITH_AS(cuda::attention_forward(rows.data(), rows.data(), rows.data(), one, 1, nullptr, nullptr, nullptr,
                                               many_keys),
                       doctest::Contains("60000 keys need 235 KB of shared memory a block, more than the GPU's 227 KB"),
                       std::invalid_argument);
}

TEST_CASE("device: every kernel wrapper takes empty work (a zero count or no keys) and leaves its outputs alone") {
  // On a GPU a launch of zero blocks is an error: the first window of an empty memory has no
  // keys (S = 0), and a dropout of nothing draws no mask. Every wrapper must see such work through.
  std::string why;
  REQUIRE(device_available(Device::CUDA, &why));
  const std::vector<float> ones(64, 1.f);
  DeviceBuffer f(Device::CUDA, 64);
  f.copy_from_host(ones.data(), 64);
  float* p = f.data();
  int32_t* ids = cuda::alloc_i32(16);
  const std::vector<int32_t> zeros(16, 0);
  cuda::to_device_i32(ids, zeros.data(), 16);
  const auto* keep = reinterpret_cast<const uint8_t*>(ids);
  cuda::dropout_mask(p, 0.2f, 1, 0, 0);
  cuda::add_forward(p, p, p, 0), cuda::mul_forward(p, p, p, 0), cuda::mul_backward(p, p, p, p, p, 0);
  cuda::scale_forward(p, p, 2.f, 0), cuda::axpy(p, 2.f, p, 0), cuda::add_rows(p, 4, p, 4, 0, 4);
  cuda::mask_rows_forward(p, p, keep, 0, 4), cuda::mask_rows_backward(p, p, keep, 0, 4);
  cuda::linear_forward(p, p, p, p, 0, 4, 4), cuda::linear_backward(p, p, p, p, p, p, 0, 4, 4);
  cuda::layernorm_forward(p, p, p, p, p, p, 0, 4), cuda::layernorm_backward_input(p, p, p, p, p, p, 0, 4);
  cuda::layernorm_backward_params(p, p, p, p, p, p, 0, 4);
  cuda::geglu_forward(p, p, 0, 4), cuda::geglu_backward(p, p, p, 0, 4);
  cuda::embedding_forward(p, p, ids, 0, 4), cuda::embedding_backward(p, p, ids, ids, ids, 0, 4);
  cuda::adamw_step(p, p, p, p, keep, 0, 1e-3, 0.9, 0.999, 1e-8, 0.01, 1, 1.f);
  cuda::sum_blocks_in_order(p, p, 1, 0);
  CHECK(cuda::sum_squares(p, 0) == 0.0);
  // Attention over no keys: zeros out; its backward adds nothing to dq or the bias.
  const AttentionDims d{2, 1, 2, 4, 0, 3};
  cuda::attention_forward(p, p + 32, p + 48, nullptr, 0, ids, p + 56, nullptr, d);
  std::vector<float> back(64);
  f.copy_to_host(back.data());
  for (int i = 0; i < 16; ++i) CHECK(back[size_t(i)] == 0.f);       // out (2 x 1 x 8): zeros
  for (int i = 16; i < 64; ++i) CHECK(back[size_t(i)] == 1.f);      // nothing else touched
  cuda::attention_backward(p + 16, p + 56, p + 32, p, p + 48, nullptr, 0, ids, p + 32, nullptr, d);
  f.copy_to_host(back.data());
  for (int i = 16; i < 32; ++i) CHECK(back[size_t(i)] == 1.f);      // dq: nothing added
  for (int i = 56; i < 62; ++i) CHECK(back[size_t(i)] == 1.f);      // the bias gradient: nothing added
  cuda::free(ids);
}

TEST_CASE("device: a step stages identical host tables once") {
  on(Device::CUDA, [] {
    const std::vector<int32_t> table{3, -1, 2, 0}, other{3, -1, 2, 1};
    const void* a = tape().stage_on_device(table.data(), 16);
    CHECK(tape().stage_on_device(table.data(), 16) == a);  // every layer of a window reads one copy
    CHECK(tape().stage_on_device(other.data(), 16) != a);
    std::vector<int32_t> back(4);
    copy_bytes(back.data(), Device::CPU, a, Device::CUDA, 16);
    CHECK(back == table);
    return 0;
  });
}

TEST_CASE("device: every op's values and gradients agree with the CPU") {
  const int64_t B = 2, n = 3, H = 2, Dh = 4, I = H * Dh, R = 5;
  std::vector<uint8_t> keep{1, 0, 1, 1, 0, 1};
  std::vector<int32_t> ids{3, 0, 3, 5, 1, 2}, labels{kNoTarget, 4, kNoTarget, 6, 0, kNoTarget}, bucket;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < R + n; ++j) bucket.push_back(j < R ? int32_t((i + j) % 4) : (j - R < i ? 1 : -1));
  std::vector<Case> cases = {
      {"linear", {{randn(15, 1), {5, 3}}, {randn(12, 2), {4, 3}}, {randn(4, 3), {4}}},
       [](auto& v) { return linear(v[0], v[1], v[2]); }},
      {"add scale", {{randn(12, 6), {3, 4}}, {randn(12, 7), {3, 4}}},
       [](auto& v) { return scale(add(add(v[0], v[1]), v[1]), 0.7f); }},
      {"mask_rows", {{randn(24, 8), {6, 4}}}, [&](auto& v) { return mask_rows(v[0], keep); }},
      {"layernorm", {{randn(21, 9), {3, 7}}, {randn(7, 10), {7}}, {randn(7, 11), {7}}},
       [](auto& v) { return layernorm(v[0], v[1], v[2]); }},
      {"geglu", {{randn(24, 12), {3, 8}}}, [](auto& v) { return geglu(v[0]); }},
      {"embedding", {{randn(28, 14), {7, 4}}}, [&](auto& v) { return embedding(v[0], ids.data(), Shape{2, 3}); }},
      {"cross_entropy", {{randn(42, 15), {6, 7}}}, [&](auto& v) { return cross_entropy(v[0], ids.data()); }},
      {"cross_entropy with rows without a target", {{randn(42, 27), {6, 7}}},
       [&](auto& v) { return cross_entropy(v[0], labels.data()); }},
      {"weighted_sum", {{randn(3, 16), {3}}, {randn(10, 17), {2, 5}}, {randn(10, 18), {2, 5}}, {randn(10, 19), {2, 5}}},
       [](auto& v) { return weighted_sum(v[0], {v[1], v[2], v[3]}); }},
      {"concat slice", {{randn(24, 20), {2, 3, 4}}, {randn(16, 21), {2, 2, 4}}},
       [](auto& v) { return slice(concat({v[0], v[1]}, 1), 1, 1, 3); }},
      {"dropout", {{randn(40, 22), {5, 8}}}, [](auto& v) {
         Rng rng(5);
         return dropout(v[0], 0.3f, rng);
       }},
      {"attention with bias and dropout",
       {{randn(sz(B * n * I), 23), {B, n, I}}, {randn(sz(B * R * 2 * I), 24), {B, R, 2 * I}},
        {randn(sz(B * n * 2 * I), 25), {B, n, 2 * I}}, {randn(sz(4 * H), 26), {4, H}}},
       [&](auto& v) {
         Rng rng(6);
         return attention(v[0], {{v[1], 0, R}, {v[2], 0, n}}, bucket, v[3], H, 0.2f, &rng);
       }},
  };
  for (const Case& c : cases) {
    INFO(c.name);
    const auto cpu = on(Device::CPU, [&] { return run_case(c); });
    const auto dev = on(Device::CUDA, [&] { return run_case(c); });
    REQUIRE(cpu.size() == dev.size());
    for (size_t k = 0; k < cpu.size(); ++k) {
      INFO("output 0, then the inputs' gradients: " << k);
      check_close(dev[k], cpu[k]);
    }
  }
}

TEST_CASE("device: the model's loss, logits, memory and gradients agree with the CPU") {
  struct Variant {
    int64_t seq_len;
    bool shared_kv, cross;
    const char* policy;
  };
  for (const Variant& v : {Variant{1, false, false, "none"}, Variant{3, true, false, "every:6"},
                           Variant{2, false, true, "horizon:4"}, Variant{4, false, false, "all"}}) {
    INFO("seq_len " << v.seq_len << ", shared_kv " << v.shared_kv << ", cross " << v.cross << ", " << v.policy);
    FeedbackTransformer model(small(v.seq_len, v.shared_kv, v.cross));
    fill_normal(model.params().values().data(), int64_t(model.params().numel()), 9, 0.3f);
    const DetachPolicy pol = DetachPolicy::parse(v.policy, v.seq_len);
    const Call cpu = on(Device::CPU, [&] { return forward_backward(model, pol); });
    model.to(Device::CUDA);
    const Call dev = forward_backward(model, pol);
    model.to(Device::CPU);
    CHECK(dev.loss == doctest::Approx(cpu.loss).epsilon(1e-5));
    check_close(dev.logits, cpu.logits);
    check_close(dev.memory, cpu.memory);
    check_close(dev.grads, cpu.grads, 1e-4);
  }
}

TEST_CASE("device: training steps with dropout, clipping and decay agree with the CPU, with and without recompute") {
  ModelConfig c = small(2, false, false);
  c.attn_dropout = 0.1f, c.ff_dropout = 0.1f;
  LoopConfig lc;
  lc.lr = 3e-3, lc.warmup = 1, lc.clip = 0.5, lc.adam.weight_decay = 0.1, lc.seed = 4;
  lc.detach = DetachPolicy::parse("horizon:4", c.seq_len);
  auto train = [&](Device d, bool recompute) {
    FeedbackTransformer model(c);
    model.to(d);
    lc.recompute = recompute;
    TrainLoop loop(model, lc);
    std::vector<double> losses;
    for (int step = 0; step < 4; ++step) {  // memory carried between the steps
      const auto in = tokens(3 * 5, 10 + step, 11), tg = tokens(3 * 5, 20 + step, 11);
      losses.push_back(loop.step(in.data(), tg.data(), 3, 5).loss);
    }
    model.params().sync_to_host();
    loop.optimizer().sync_to_host();
    std::vector<float> state = model.params().values();
    state.insert(state.end(), loop.optimizer().v().begin(), loop.optimizer().v().end());
    const std::vector<float> memory = loop.memory();  // a copy from the device
    state.insert(state.end(), memory.begin(), memory.end());
    model.to(Device::CPU);
    return std::make_pair(losses, state);
  };
  const auto cpu = train(Device::CPU, false);
  for (bool recompute : {false, true}) {  // windows recomputed in the backward (Tape::checkpoint) on the device
    INFO("recompute ", recompute);
    const auto dev = train(Device::CUDA, recompute);
    for (size_t i = 0; i < cpu.first.size(); ++i) CHECK(dev.first[i] == doctest::Approx(cpu.first[i]).epsilon(1e-5));
    check_close_overall(dev.second, cpu.second, 1e-4);
  }
}

// Adaptive span on the device: the mask and its gradient in the kernels, the span term and the
// clamp through the host, the reach read from device weights; both families, windows too.
TEST_CASE("device: training with adaptive spans agrees with the CPU, both families") {
  for (const char* type : {"feedback", "transformer_xl"})
    for (int64_t seq_len : {int64_t(1), int64_t(2)}) {
      if (type == std::string("transformer_xl") && seq_len > 1) continue;
      INFO(type << " seq_len " << seq_len);
      ModelConfig c = small(seq_len, false, false);
      c.type = type, c.mem_len = 9, c.adapt_span = true, c.adapt_span_ramp = 2, c.adapt_span_init = 0.3f;
      LoopConfig lc;
      lc.lr = 3e-2, lc.warmup = 1, lc.seed = 4, lc.adapt_span_loss = 0.05;
      auto train = [&](Device d) {
        auto model = make_model(c);
        model->to(d);
        TrainLoop loop(*model, lc);
        std::vector<double> losses;
        for (int step = 0; step < 5; ++step) {
          const auto in = tokens(3 * 6, 10 + step, 11), tg = tokens(3 * 6, 20 + step, 11);
          const StepStats s = loop.step(in.data(), tg.data(), 3, 6);
          losses.push_back(s.loss), losses.push_back(s.span_loss);
        }
        model->params().sync_to_host();
        std::vector<float> state = model->params().values();
        const std::vector<float> memory = loop.memory();
        state.insert(state.end(), memory.begin(), memory.end());
        const auto spans = model->spans();
        model->to(Device::CPU);
        return std::make_tuple(losses, state, spans);
      };
      const auto cpu = train(Device::CPU), dev = train(Device::CUDA);
      for (size_t i = 0; i < std::get<0>(cpu).size(); ++i)
        CHECK(std::get<0>(dev)[i] == doctest::Approx(std::get<0>(cpu)[i]).epsilon(1e-5));
      check_close_overall(std::get<1>(dev), std::get<1>(cpu), 1e-4);
      for (size_t l = 0; l < std::get<2>(cpu).size(); ++l) check_close(std::get<2>(dev)[l], std::get<2>(cpu)[l], 1e-4);
    }
}

TEST_CASE("device: sampling keeps its projected memory on the device and draws the CPU's tokens") {
  FeedbackTransformer model(small(1, false, false));
  fill_normal(model.params().values().data(), int64_t(model.params().numel()), 12, 0.5f);
  SampleOptions opt;
  opt.tokens = 12, opt.temperature = 0.f, opt.seed = 3;
  const std::vector<int32_t> prompt{1, 4, 2};
  const auto cpu = generate(model, prompt, opt);
  model.to(Device::CUDA);
  const auto dev = generate(model, prompt, opt);
  model.to(Device::CPU);
  CHECK(dev == cpu);
}

TEST_CASE("device: a run on the device trains as on the CPU, and resumes bit-identically") {
  using fbt::testing::TempDir;
  const std::string dropout = "  attn_dropout: 0.2\n  ff_dropout: 0.1\n";
  TempDir cpu_dir, dev_dir, resumed_dir;
  Trainer(load_run_config(fbt::testing::write_config(cpu_dir, "", dropout))).run(false);
  Trainer(load_run_config(fbt::testing::write_config(dev_dir, "  device: cuda\n", dropout))).run(false);
  tape().set_device(Device::CPU);  // the trainer left this thread's tape on the device
  check_close_overall(fbt::testing::final_weights(dev_dir / "out"), fbt::testing::final_weights(cpu_dir / "out"), 1e-4);

  RunConfig cr = load_run_config(fbt::testing::write_config(resumed_dir, "  device: cuda\n", dropout));
  Trainer(cr).run(false, 5);  // a session that ends after step 5
  Trainer(cr).run(true);
  tape().set_device(Device::CPU);
  CHECK(fbt::testing::final_weights(resumed_dir / "out") == fbt::testing::final_weights(dev_dir / "out"));
}
