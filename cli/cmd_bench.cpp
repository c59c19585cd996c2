// `fbt bench`: times full training steps (TrainLoop: forward, backward, clipping, AdamW) on random tokens with a
// config's model and train.batch_size / bptt / threads, and measures the SGEMM peak of its
// own product (cpu::gemm) in the same run, so the achieved GFLOP/s can be read as a fraction of it. One JSON line. With
// train.device: cuda the step runs on the GPU, the peak is cuBLAS's, and peak_device_mb is the
// most device memory the run held. --profile adds op-by-op timings of further steps (the timed
// steps run without the timers). Under mpirun each process steps its block of the streams with
// the gradients summed across processes (docs/DISTRIBUTED.md); the root reports the global
// tokens/s and what the gradient sum costs on its own. --sample N adds the speed of generating N
// tokens at batch 1 (incremental decoding, as fbt sample). With train.init_from the model starts
// from those weights (the spans a run has learned: their cost is what adaptive span saves).
#include <fmt/core.h>
#include <omp.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>

#include "backend/comm.hpp"
#include "backend/cpu/kernels.hpp"
#include "backend/rng.hpp"
#include "backend/threads.hpp"
#include "backend/profile.hpp"
#include "backend/cuda/kernels.hpp"
#include "cli/commands.hpp"
#include "cli/common.hpp"
#include "train/config.hpp"
#include "train/sample.hpp"
#include "train/trainer.hpp"
#include "models/model.hpp"

namespace fbt::cli {

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Best of a few large square SGEMMs through fbt's own product (cpu::gemm, what linears run) on the
// current thread count.
double sgemm_peak_gflops() {
  const int64_t n = 1024;
  std::vector<float> a(size_t(n * n)), b(size_t(n * n)), c(size_t(n * n));
  Rng rng(1);
  for (float& v : a) v = float(rng.normal());
  for (float& v : b) v = float(rng.normal());
  double best = 0;
  for (int rep = 0; rep < 4; ++rep) {
    auto t0 = std::chrono::steady_clock::now();
    cpu::gemm(c.data(), n, {a.data(), n, 1}, {b.data(), n, 1}, n, n, n, false);
    best = std::max(best, 2.0 * double(n * n * n) / seconds_since(t0) / 1e9);
  }
  return best;
}

// Multiply-add FLOPs of one training step (forward x 3 for forward + backward), matrix work only.
// `reach`: the farthest key distance attention computes (Model::span_reach; adaptive spans read less).
double step_flops(const ModelConfig& c, int64_t B, int64_t T, int64_t reach) {
  const double D = double(c.dim), I = double(c.inner()), F = double(c.ff_inner()), V = double(c.num_tokens);
  const double L = double(c.depth), n = double(c.seq_len);
  double per_token = 0;
  per_token += L * (2 * D * I + 2 * I * D + 2 * D * 2 * F + 2 * F * D);     // to_q, to_out, w_in, w_out
  const double read = double(std::min(c.mem_len, reach));  // memory rows a call reads
  double visible = 0;  // keys a query sees once the carried memory is full (the steps bench times)
  if (c.type == "transformer_xl") {
    // Each layer projects the cached inputs it reads and the call's, every call (the weights have moved).
    per_token += L * 2 * D * 2 * I * (read + double(T)) / double(T);
    visible = read;
  } else {
    per_token += (c.shared_kv ? 1.0 : L) * 2 * D * 2 * I;                  // memory key/value projection
    if (c.seq_len > 1) per_token += L * 2 * D * 2 * I;                     // window-local keys/values
    visible = read + (n - 1) / 2;  // every memory slot read, and on average half of its window
  }
  per_token += L * 2 * 2 * visible * I;                                    // scores and weighted values
  per_token += 2 * D * V;                                                  // logits
  return 3.0 * per_token * double(B * T);
}

// Runs `steps` more steps with the op timers on; prints where a step's time goes to stderr and
// returns the rows (ms and calls per step) for the JSON line.
template <class Step>
nlohmann::json profile_steps(Step&& step, int64_t steps, bool on_device) {
  profile::start(/*sync_device=*/on_device);
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < steps; ++i) step();
  const double step_ms = 1000.0 * seconds_since(t0) / double(steps);
  const std::vector<profile::Row> rows = profile::stop();
  nlohmann::json out = nlohmann::json::array();
  fmt::print(stderr, "{:<10} {:<28} {:>10} {:>8} {:>8}\n", "phase", "op", "ms/step", "share", "calls");
  double covered = 0;
  auto line = [&](const std::string& phase, const std::string& op, double ms, double calls) {
    fmt::print(stderr, "{:<10} {:<28} {:>10.2f} {:>7.1f}% {:>8.0f}\n", phase, op, ms, 100.0 * ms / step_ms, calls);
    out.push_back({{"phase", phase}, {"op", op}, {"ms_per_step", ms}, {"calls_per_step", calls}});
  };
  for (const profile::Row& r : rows) {
    const double ms = 1000.0 * r.seconds / double(steps);
    covered += ms;
    line(profile::phase_name(r.phase), r.op, ms, double(r.calls) / double(steps));
  }
  line("", "(outside any op)", step_ms - covered, 0);  // model glue, memory hand-over, the tape's bookkeeping
  fmt::print(stderr, "{:<10} {:<28} {:>10.2f}   (profiled steps; the timers add a little)\n", "", "step", step_ms);
  return out;
}

struct BenchArgs {
  std::string config;
  std::vector<std::string> overrides;
  int64_t steps = 10;
  bool profile = false;  // then as many steps again with op timers: a table on stderr, "profile" in the JSON
  int64_t sample = 0;    // then generate this many tokens at batch 1: sampling speed in the JSON
};

// The median seconds of `steps` calls of step() after `warmup` calls (they size the arena and fill
// the memory; the median is robust to the other tenants of a shared machine), and how often the
// thread team shrank for another process meanwhile (backend/threads).
std::pair<double, int> time_steps(const std::function<void()>& step, int64_t warmup, int64_t steps) {
  for (int64_t i = 0; i < warmup; ++i) step();
  const int shrinks_before = threads::shrinks();
  std::vector<double> secs;
  for (int64_t i = 0; i < steps; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    step();
    secs.push_back(seconds_since(t0));
  }
  return {median(secs), threads::shrinks() - shrinks_before};
}

// The gradient sum alone, as a step does it (part of the step time): its median over five.
double time_reduce(Comm& comm, size_t P, Device device) {
  DeviceBuffer g(device, P);
  std::vector<double> secs;
  for (int i = 0; i < 5; ++i) {
    comm.barrier();
    const auto t0 = std::chrono::steady_clock::now();
    comm.sum_ordered(g.data(), P, device);
    if (device != Device::CPU) cuda::synchronize();
    secs.push_back(seconds_since(t0));
  }
  return median(secs);
}

// Sampling speed: one stream, a token of prompt, then one step per new token (train/sample).
double time_sampling(Model& model, int64_t tokens, uint64_t seed) {
  SampleOptions so;
  so.tokens = tokens, so.temperature = 1.f, so.top_k = 0, so.seed = seed;
  const auto t0 = std::chrono::steady_clock::now();
  generate(model, {0}, so);
  return seconds_since(t0);
}

// The JSON line's speed and size figures for steps of step_secs.
nlohmann::json speed_json(const BenchArgs& a, const RunConfig& cfg, int64_t reach, Device device, double step_secs,
                          int team_shrinks) {
  const int64_t B = cfg.train.batch_size, T = cfg.train.bptt;
  struct rusage ru {};
  ::getrusage(RUSAGE_SELF, &ru);
  const double gflops = step_flops(cfg.model, B, T, reach) / step_secs / 1e9;
  const double peak = device == Device::CPU ? sgemm_peak_gflops() : cuda::sgemm_peak_gflops();
  return {{"config", a.config},
          {"device", device == Device::CPU ? "cpu" : cuda::device_name()},
          {"threads", threads::max_threads()},
          {"team_shrinks", team_shrinks},
          {"batch_size", B},
          {"bptt", T},
          {"steps", a.steps},
          {"tokens_per_s", double(B * T) / step_secs},
          {"step_ms", 1000.0 * step_secs},
          {"peak_rss_mb", double(ru.ru_maxrss) / 1024.0},
          {"gflops", gflops},
          {"sgemm_peak_gflops", peak},
          {"gemm", device == Device::CPU ? cpu::gemm_kernel() : std::string("cuBLAS")},
          {"fraction_of_peak", gflops / peak}};
}

void run_bench(const BenchArgs& a) {
  RunConfig cfg = load_run_config(a.config, a.overrides, /*require_data=*/false);  // random tokens: no data needed
  const TrainConfig& t = cfg.train;
  set_threads(t.threads);
  const Device device = parse_device(t.device);
  const std::unique_ptr<Model> model_ptr = make_model(cfg.model, /*initialize=*/false);
  Model& model = *model_ptr;
  model.init(t.seed, t.init);
  if (!t.init_from.empty()) load_init_weights(model, t.init_from);  // e.g. the spans a run has learned
  Comm& comm = Comm::world();
  if (device == Device::CUDA && comm.size() > 1) cuda::select_device(comm.local_rank());  // one GPU per rank
  model.to(device);
  const int64_t N = comm.size(), mine = streams_per_process(cfg, N);
  LoopConfig lc = loop_config(cfg);
  lc.comm = &comm;
  TrainLoop loop(model, lc);
  const int64_t B = t.batch_size, T = t.bptt, V = cfg.model.num_tokens;
  Rng data_rng(t.seed);
  std::vector<int32_t> in(size_t(B * T)), tg(size_t(B * T));
  auto step = [&] {
    for (size_t i = 0; i < in.size(); ++i) {
      in[i] = int32_t(data_rng.uniform() * float(V)) % int32_t(V);
      tg[i] = int32_t(data_rng.uniform() * float(V)) % int32_t(V);
    }
    const int64_t first = comm.rank() * mine * T;  // this process's streams
    loop.step(in.data() + first, tg.data() + first, mine, T);  // memory carried between steps, as in training
    if (device != Device::CPU) cuda::synchronize();  // (reading the loss already waits; be explicit)
  };
  // Time the steps of a full memory: it grows by bptt rows a step up to mem_len.
  const int64_t warmup = std::max<int64_t>(1, (cfg.model.mem_len + T - 1) / T);
  const auto [step_secs, team_shrinks] = time_steps(step, warmup, a.steps);
  nlohmann::json profile_rows = nlohmann::json::array();
  if (a.profile) profile_rows = profile_steps(step, a.steps, device != Device::CPU);
  const size_t P = model.params().numel();
  const double reduce = N > 1 ? time_reduce(comm, P, device) : 0.0;
  if (!comm.root()) return;
  const double sample_secs = a.sample > 0 ? time_sampling(model, a.sample, t.seed) : 0.0;
  // (peak memory: after sampling too)
  nlohmann::json j = speed_json(a, cfg, model.span_reach(), device, step_secs, team_shrinks);
  if (a.profile) j["profile"] = profile_rows;
  if (a.sample > 0) j["sample_tokens_per_s"] = double(a.sample) / sample_secs;
  if (N > 1) {
    j["processes"] = N;
    j["reduce_ms"] = 1000.0 * reduce;
    j["reduce_share"] = reduce / step_secs;
    // Each process sends and receives (N-1)/N of the gradient twice (its chunks, then the sums).
    j["reduce_bytes_per_process"] = 2.0 * double(P) * sizeof(float) * double(N - 1) / double(N);
  }
  if (device != Device::CPU) j["peak_device_mb"] = double(cuda::peak_allocated_bytes()) / (1024.0 * 1024.0);
  fmt::print("{}\n", j.dump());
}

}  // namespace

void add_bench(CLI::App& app) {
  auto a = std::make_shared<BenchArgs>();
  CLI::App* sub = app.add_subcommand("bench", "time training steps on random tokens; one JSON line");
  sub->add_option("--config", a->config, "run config (model:, train.batch_size, bptt, threads)")
      ->required()
      ->check(CLI::ExistingFile);
  sub->add_option("--steps", a->steps, "timed steps after the warm-up steps that fill the memory (the median is reported)")
      ->check(at_least(1));
  sub->add_option("--set", a->overrides, "override a config key");
  sub->add_flag("--profile", a->profile,
                "then time as many steps again op by op (forward, backward, optimizer): a table on stderr, "
                "\"profile\" rows in the JSON");
  sub->add_option("--sample", a->sample,
                  "then generate this many tokens at batch 1 (sampling speed: \"sample_tokens_per_s\" in the JSON)")
      ->check(at_least(0));
  sub->callback([a] { run_bench(*a); });
}

}  // namespace fbt::cli
