// CPU/CUDA parity: every CUDA kernel against its CPU twin on odd shapes, forward and backward,
// and determinism of the backward reductions. Runs only where a GPU is present (main_cuda.cpp).
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <deque>
#include <vector>

#include "autograd/params.hpp"
#include "gradcheck.hpp"
#include "backend/cpu/kernels.hpp"
#include "backend/cuda/kernels.hpp"
#include "train/optimizer.hpp"

using namespace fbt;
using fbt::testing::check_close;
using fbt::testing::fill_normal;
using fbt::testing::sz;

namespace {

// A device copy of a host vector, freed at scope end.
struct Dev {
  float* p = nullptr;
  size_t n = 0;
  explicit Dev(const std::vector<float>& h) : p(cuda::alloc(h.size())), n(h.size()) { cuda::to_device(p, h.data(), n); }
  explicit Dev(size_t count) : p(cuda::alloc(count)), n(count) { cuda::memset_zero(p, n); }
  ~Dev() { cuda::free(p); }
  std::vector<float> host() const {
    std::vector<float> h(n);
    cuda::to_host(h.data(), p, n);
    return h;
  }
};
struct DevI {
  int32_t* p;
  explicit DevI(const std::vector<int32_t>& h) : p(cuda::alloc_i32(h.size())) { cuda::to_device_i32(p, h.data(), h.size()); }
  ~DevI() { cuda::free(p); }
};

std::vector<float> randn(size_t n, uint64_t seed) {
  std::vector<float> v(n);
  fill_normal(v.data(), int64_t(n), seed);
  return v;
}

}  // namespace

TEST_CASE("cuda: linear forward and backward") {
  for (auto [N, In, Out] : {std::tuple<int64_t, int64_t, int64_t>{3, 7, 5}, {1, 1, 1}, {65, 130, 257}}) {
    auto x = randn(sz(N * In), 1), W = randn(sz(Out * In), 2), b = randn(sz(Out), 3), dy = randn(sz(N * Out), 4);
    std::vector<float> y(sz(N * Out)), dx(sz(N * In), 0.5f), dW(sz(Out * In), 0.25f), db(sz(Out), 1.f);
    Dev gx(x), gW(W), gb(b), gy(sz(N * Out)), gdy(dy), gdx(dx), gdW(dW), gdb(db);
    cpu::linear_forward(y.data(), x.data(), W.data(), b.data(), N, In, Out);
    cuda::linear_forward(gy.p, gx.p, gW.p, gb.p, N, In, Out);
    check_close(gy.host(), y);
    cpu::linear_backward(dx.data(), dW.data(), db.data(), dy.data(), x.data(), W.data(), N, In, Out);
    cuda::linear_backward(gdx.p, gdW.p, gdb.p, gdy.p, gx.p, gW.p, N, In, Out);
    check_close(gdx.host(), dx), check_close(gdW.host(), dW), check_close(gdb.host(), db);
  }
}

TEST_CASE("cuda: layernorm forward and backward") {
  for (auto [N, C] : {std::pair<int64_t, int64_t>{3, 7}, {1, 5}, {300, 129}}) {
    auto x = randn(sz(N * C), 5), w = randn(sz(C), 6), b = randn(sz(C), 7), dy = randn(sz(N * C), 8);
    std::vector<float> y(sz(N * C)), mean(sz(N)), rstd(sz(N)), dx(sz(N * C), 0.f), dw(sz(C), 0.f),
        db(sz(C), 0.f);
    Dev gx(x), gw(w), gb(b), gy(sz(N * C)), gm(sz(N)), gr(sz(N)), gdy(dy), gdx(sz(N * C)), gdw(sz(C)),
        gdb(sz(C));
    cpu::layernorm_forward(y.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), N, C);
    cuda::layernorm_forward(gy.p, gm.p, gr.p, gx.p, gw.p, gb.p, N, C);
    check_close(gy.host(), y), check_close(gm.host(), mean), check_close(gr.host(), rstd);
    cpu::layernorm_backward_input(dx.data(), dy.data(), x.data(), w.data(), mean.data(), rstd.data(), N, C);
    cpu::layernorm_backward_params(dw.data(), db.data(), dy.data(), x.data(), mean.data(), rstd.data(), N, C);
    cuda::layernorm_backward_input(gdx.p, gdy.p, gx.p, gw.p, gm.p, gr.p, N, C);
    cuda::layernorm_backward_params(gdw.p, gdb.p, gdy.p, gx.p, gm.p, gr.p, N, C);
    check_close(gdx.host(), dx, 1e-4), check_close(gdw.host(), dw, 1e-4), check_close(gdb.host(), db, 1e-4);
    // accumulate false overwrites what the gradient held
    cpu::layernorm_backward_input(dx.data(), dy.data(), x.data(), w.data(), mean.data(), rstd.data(), N, C, false);
    cuda::layernorm_backward_input(gdx.p, gdy.p, gx.p, gw.p, gm.p, gr.p, N, C, false);
    check_close(gdx.host(), dx, 1e-4);
  }
}

TEST_CASE("cuda: geglu forward and backward") {
  const int64_t N = 3, F = 7;
  auto u = randn(sz(N * 2 * F), 9), dy = randn(sz(N * F), 10);
  std::vector<float> y(sz(N * F)), du(sz(N * 2 * F), 0.f);
  Dev gu(u), gyv(sz(N * F)), gdy(dy), gdu(sz(N * 2 * F));
  cpu::geglu_forward(y.data(), u.data(), N, F);
  cuda::geglu_forward(gyv.p, gu.p, N, F);
  check_close(gyv.host(), y);
  cpu::geglu_backward(du.data(), dy.data(), u.data(), N, F);
  cuda::geglu_backward(gdu.p, gdy.p, gu.p, N, F);
  check_close(gdu.host(), du);
  cpu::geglu_backward(du.data(), dy.data(), u.data(), N, F, /*accumulate=*/false);
  cuda::geglu_backward(gdu.p, gdy.p, gu.p, N, F, /*accumulate=*/false);
  check_close(gdu.host(), du);
}

TEST_CASE("cuda: embedding gather and scatter-add") {
  const int64_t V = 5, D = 7, N = 6;
  auto W = randn(sz(V * D), 13), dy = randn(sz(N * D), 14);
  std::vector<int32_t> ids{1, 4, 1, 0, 1, 3};
  std::vector<float> y(sz(N * D)), dW(sz(V * D), 0.f);
  Dev gW(W), gy(sz(N * D)), gdy(dy), gdW(sz(V * D));
  DevI gids(ids);
  cpu::embedding_forward(y.data(), W.data(), ids.data(), N, D);
  cuda::embedding_forward(gy.p, gW.p, gids.p, N, D);
  check_close(gy.host(), y);
  const TokenRows g = group_by_token(ids.data(), N);
  CHECK(g.tokens == std::vector<int32_t>{0, 1, 3, 4});
  CHECK(g.rows == std::vector<int32_t>{3, 0, 2, 4, 5, 1});
  CHECK(g.starts == std::vector<int32_t>{0, 1, 4, 5, 6});
  cpu::embedding_backward(dW.data(), dy.data(), g.rows.data(), g.tokens.data(), g.starts.data(),
                          int64_t(g.tokens.size()), D);
  DevI rows(g.rows), tokens(g.tokens), starts(g.starts);
  cuda::embedding_backward(gdW.p, gdy.p, rows.p, tokens.p, starts.p, int64_t(g.tokens.size()), D);
  check_close(gdW.host(), dW);
}

TEST_CASE("cuda: cross-entropy over a large vocabulary, and many rows of the embedding gradient") {
  const int64_t N = 37, V = 50257, D = 96;
  auto logits = randn(sz(N * V), 70), W = randn(sz(V * D), 71), dy = randn(sz(N * D), 72);
  std::vector<int32_t> tg, ids;
  for (int64_t r = 0; r < N; ++r) tg.push_back(int32_t((r * 7919) % V)), ids.push_back(int32_t((r * r) % 11));
  std::vector<float> lse(sz(N)), dW(W.size(), 0.f);
  Dev glog(logits), glse(sz(N)), gdW(W.size()), gdy(dy);
  DevI gtg(tg);
  float cpu_loss = 0.f;
  cpu::cross_entropy_forward(&cpu_loss, lse.data(), logits.data(), tg.data(), N, V, N);
  Dev gloss(1);
  cuda::cross_entropy_forward(gloss.p, glse.p, glog.p, gtg.p, N, V, N);
  CHECK(gloss.host()[0] == doctest::Approx(cpu_loss).epsilon(1e-5));
  check_close(glse.host(), lse);
  const TokenRows g = group_by_token(ids.data(), N);
  cpu::embedding_backward(dW.data(), dy.data(), g.rows.data(), g.tokens.data(), g.starts.data(),
                          int64_t(g.tokens.size()), D);
  DevI rows(g.rows), tokens(g.tokens), starts(g.starts);
  cuda::embedding_backward(gdW.p, gdy.p, rows.p, tokens.p, starts.p, int64_t(g.tokens.size()), D);
  check_close(gdW.host(), dW);
}

TEST_CASE("cuda: softmax cross-entropy forward and backward, with rows without a target") {
  const int64_t N = 5, V = 7;
  auto logits = randn(sz(N * V), 15);
  std::vector<int32_t> tg{6, -1, 3, 3, -1};  // two rows carry no loss: the mean is over 3
  std::vector<float> lse(sz(N)), dl(sz(N * V), 0.f);
  Dev glog(logits), glse(sz(N)), gdl(sz(N * V));
  DevI gtg(tg);
  float cpu_loss = 0.f, seed = 0.5f;
  cpu::cross_entropy_forward(&cpu_loss, lse.data(), logits.data(), tg.data(), N, V, 3);
  Dev gloss(1), gseed(std::vector<float>{seed});
  cuda::cross_entropy_forward(gloss.p, glse.p, glog.p, gtg.p, N, V, 3);
  CHECK(gloss.host()[0] == doctest::Approx(cpu_loss).epsilon(1e-6));
  cpu::cross_entropy_backward(dl.data(), &seed, 3, logits.data(), lse.data(), tg.data(), N, V);
  cuda::cross_entropy_backward(gdl.p, gseed.p, 3, glog.p, glse.p, gtg.p, N, V);
  check_close(gdl.host(), dl);
}

TEST_CASE("cuda: memory mix weighted sum forward and backward") {
  const int64_t K = 4, n = 21;
  auto w = randn(sz(K), 16), dy = randn(sz(n), 17);
  std::vector<std::vector<float>> xs;
  for (int k = 0; k < K; ++k) xs.push_back(randn(sz(n), uint64_t(18 + k)));
  std::vector<const float*> xp;
  for (auto& x : xs) xp.push_back(x.data());
  std::vector<float> y(sz(n)), a(sz(K)), dw(sz(K), 0.f);
  std::vector<std::vector<float>> dxs(sz(K), std::vector<float>(sz(n), 0.f));
  std::vector<float*> dxp;
  for (auto& d : dxs) dxp.push_back(d.data());
  cpu::weighted_sum_forward(y.data(), a.data(), w.data(), xp.data(), K, n);
  cpu::weighted_sum_backward(dxp.data(), dw.data(), dy.data(), a.data(), xp.data(), K, n);

  Dev gw(w), gy(sz(n)), ga(sz(K)), gdy(dy), gdw(sz(K));
  std::vector<std::unique_ptr<Dev>> gx, gdx;
  std::vector<float> ptrs_x, ptrs_dx;  // device pointer arrays, uploaded as raw bytes
  std::vector<const float*> hx;
  std::vector<float*> hdx;
  for (int k = 0; k < K; ++k) {
    gx.push_back(std::make_unique<Dev>(xs[sz(k)]));
    gdx.push_back(std::make_unique<Dev>(sz(n)));
    hx.push_back(gx.back()->p);
    hdx.push_back(gdx.back()->p);
  }
  float* dxs_arr = cuda::alloc(sz(2 * K));  // K pointers = 2K floats
  float* xs_arr = cuda::alloc(sz(2 * K));
  cuda::to_device(xs_arr, reinterpret_cast<const float*>(hx.data()), sz(2 * K));
  cuda::to_device(dxs_arr, reinterpret_cast<const float*>(hdx.data()), sz(2 * K));
  cuda::weighted_sum_forward(gy.p, ga.p, gw.p, reinterpret_cast<const float* const*>(xs_arr), K, n);
  check_close(gy.host(), y), check_close(ga.host(), a);
  cuda::weighted_sum_backward(reinterpret_cast<float* const*>(dxs_arr), gdw.p, gdy.p, ga.p,
                              reinterpret_cast<const float* const*>(xs_arr), K, n);
  check_close(gdw.host(), dw);
  for (int k = 0; k < K; ++k) check_close(gdx[sz(k)]->host(), dxs[sz(k)]);
  cuda::free(xs_arr), cuda::free(dxs_arr);
}

TEST_CASE("cuda: attention over segments with bias mask and dropout") {
  for (auto [B, n, H, Dh, M] : {std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t>{2, 3, 2, 3, 4},
                                {3, 1, 2, 5, 6},
                                {2, 4, 4, 16, 0}}) {
    for (bool with_drop : {false, true}) {
      const int64_t I = H * Dh, S = M + n, NB = 6;
      auto q = randn(sz(B * n * I), 20), mem = randn(sz(B * (M + 1) * 2 * I), 21), loc = randn(sz(B * n * 2 * I), 22),
           bias = randn(sz(NB * H), 23), dout = randn(sz(B * n * I), 24);
      std::vector<float> drop(sz(B * H * n * S));
      cpu::dropout_mask(drop.data(), 0.3f, 5, 0, int64_t(drop.size()));
      std::vector<int32_t> table;
      for (int64_t i = 0; i < n; ++i) {
        for (int64_t j = 0; j < M; ++j) table.push_back(int32_t((i + M - j) % NB));
        for (int64_t j = 0; j < n; ++j) table.push_back(j < i ? int32_t((i - j) % NB) : -1);
      }
      const AttentionDims d{B, n, H, Dh, S, NB};
      // CPU
      std::vector<float> out(sz(B * n * I)), probs(sz(B * H * n * S)), dl(sz(B * H * n * S)),
          dq(sz(B * n * I), 0.f), dmem(mem.size(), 0.f), dloc(loc.size(), 0.f), dbias(bias.size(), 0.f);
      KVRows cs[2] = {{mem.data() + 2 * I, dmem.data() + 2 * I, (M + 1) * 2 * I, M},
                           {loc.data(), dloc.data(), n * 2 * I, n}};
      cpu::attention_forward(out.data(), probs.data(), q.data(), cs, 2, table.data(), bias.data(),
                             with_drop ? drop.data() : nullptr, d);
      cpu::attention_backward(dq.data(), dbias.data(), dl.data(), dout.data(), q.data(), cs, 2, table.data(), probs.data(),
                              with_drop ? drop.data() : nullptr, d);
      // CUDA
      Dev gq(q), gmem(mem), gloc(loc), gbias(bias), gdout(dout), gdrop(drop), gout(out.size()), gprobs(probs.size()),
          gdl(dl.size()), gdq(dq.size()), gdmem(mem.size()), gdloc(loc.size()), gdbias(bias.size());
      DevI gtable(table);
      KVRows gs[2] = {{gmem.p + 2 * I, gdmem.p + 2 * I, (M + 1) * 2 * I, M}, {gloc.p, gdloc.p, n * 2 * I, n}};
      cuda::attention_forward(gout.p, gprobs.p, gq.p, gs, 2, gtable.p, gbias.p, with_drop ? gdrop.p : nullptr, d);
      cuda::attention_backward(gdq.p, gdbias.p, gdl.p, gdout.p, gq.p, gs, 2, gtable.p, gprobs.p,
                               with_drop ? gdrop.p : nullptr, d);
      INFO("B " << B << " n " << n << " M " << M << " dropout " << with_drop);
      check_close(gout.host(), out, 1e-4), check_close(gprobs.host(), probs, 1e-4);
      check_close(gdq.host(), dq, 1e-4), check_close(gdmem.host(), dmem, 1e-4), check_close(gdloc.host(), dloc, 1e-4);
      check_close(gdbias.host(), dbias, 1e-4);
    }
  }
}

TEST_CASE("cuda: attention with an adaptive span, the spans' gradient included, single queries and windows") {
  for (auto [B, n, H, Dh, M] : {std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t>{2, 1, 3, 8, 29},
                                {2, 5, 3, 24, 13}}) {
    for (bool with_drop : {false, true}) {
      INFO("B " << B << " n " << n << " M " << M << " dropout " << with_drop);
      const int64_t I = H * Dh, S = M + n, NB = 6, mem_len = 23, ramp = 4;
      auto q = randn(sz(B * n * I), 60), mem = randn(sz(B * (M + 1) * 2 * I), 61), loc = randn(sz(B * n * 2 * I), 62),
           bias = randn(sz(NB * H), 63), dout = randn(sz(B * n * I), 64);
      std::vector<float> drop(sz(B * H * n * S)), z = {0.f, 0.37f, 1.f};
      cpu::dropout_mask(drop.data(), 0.3f, 5, 0, int64_t(drop.size()));
      std::vector<int32_t> table, distance;
      for (int64_t i = 0; i < n; ++i) {
        for (int64_t j = 0; j < M; ++j) table.push_back(int32_t((i + M - j) % NB)), distance.push_back(int32_t(i + M - j));
        for (int64_t j = 0; j < n; ++j)
          table.push_back(j < i ? int32_t((i - j) % NB) : -1), distance.push_back(j < i ? int32_t(i - j) : 0);
      }
      const AttentionDims d{B, n, H, Dh, S, NB};
      const float* dr = with_drop ? drop.data() : nullptr;
      std::vector<float> out(sz(B * n * I)), probs(sz(B * H * n * S)), raw(probs.size()), dl(probs.size()),
          dq(sz(B * n * I), 0.f), dmem(mem.size(), 0.f), dloc(loc.size(), 0.f), dbias(bias.size(), 0.f), dz(sz(H), 0.f);
      KVRows cs[2] = {{mem.data() + 2 * I, dmem.data() + 2 * I, (M + 1) * 2 * I, M}, {loc.data(), dloc.data(), n * 2 * I, n}};
      const AttentionSpan cspan{z.data(), dz.data(), distance.data(), raw.data(), mem_len, ramp};
      cpu::attention_forward(out.data(), probs.data(), q.data(), cs, 2, table.data(), bias.data(), dr, d, cspan);
      cpu::attention_backward(dq.data(), dbias.data(), dl.data(), dout.data(), q.data(), cs, 2, table.data(), probs.data(),
                              dr, d, cspan);
      Dev gq(q), gmem(mem), gloc(loc), gbias(bias), gdout(dout), gdrop(drop), gout(out.size()), gprobs(probs.size()),
          graw(raw.size()), gdl(dl.size()), gdq(dq.size()), gdmem(mem.size()), gdloc(loc.size()), gdbias(bias.size()),
          gz(z), gdz(dz.size());
      DevI gtable(table), gdist(distance);
      KVRows gs[2] = {{gmem.p + 2 * I, gdmem.p + 2 * I, (M + 1) * 2 * I, M}, {gloc.p, gdloc.p, n * 2 * I, n}};
      const AttentionSpan gspan{gz.p, gdz.p, gdist.p, graw.p, mem_len, ramp};
      const float* gdr = with_drop ? gdrop.p : nullptr;
      cuda::attention_forward(gout.p, gprobs.p, gq.p, gs, 2, gtable.p, gbias.p, gdr, d, gspan);
      cuda::attention_backward(gdq.p, gdbias.p, gdl.p, gdout.p, gq.p, gs, 2, gtable.p, gprobs.p, gdr, d, gspan);
      check_close(gout.host(), out, 1e-4), check_close(gprobs.host(), probs, 1e-4), check_close(graw.host(), raw, 1e-4);
      check_close(gdq.host(), dq, 1e-4), check_close(gdmem.host(), dmem, 1e-4), check_close(gdloc.host(), dloc, 1e-4);
      check_close(gdbias.host(), dbias, 1e-4), check_close(gdz.host(), dz, 1e-3);
    }
  }
}

TEST_CASE("cuda: AdamW step and grad norm match the CPU optimizer") {
  ParamStore ps;
  ps.add("layers.0.ff.w_in.weight", {3, 7}, ParamRole::Matrix);
  ps.add("layers.0.ff.w_in.bias", {3}, ParamRole::Bias);
  ps.finalize();
  const size_t P = ps.numel();
  fill_normal(ps.values().data(), int64_t(P), 30);
  std::vector<float> w0 = ps.values();
  std::vector<uint8_t> decay(P);
  for (size_t i = 0; i < P; ++i) decay[i] = i < 21;
  Dev gw(w0), gm(P), gv(P);
  std::vector<int32_t> words(P / 4 + 1, 0);  // the flags in whole int32 words (no read past decay's end)
  std::memcpy(words.data(), decay.data(), P);
  uint8_t* gdecay = reinterpret_cast<uint8_t*>(cuda::alloc_i32(words.size()));
  cuda::to_device_i32(reinterpret_cast<int32_t*>(gdecay), words.data(), words.size());
  AdamW opt(ps, AdamWConfig{0.9, 0.999, 1e-8, 0.1});
  for (int t = 1; t <= 3; ++t) {
    fill_normal(ps.grads().data(), int64_t(P), uint64_t(40 + t));
    Dev gg(ps.grads());
    CHECK(cuda::sum_squares(gg.p, int64_t(P)) == doctest::Approx(cpu::sum_squares(ps.grads().data(), int64_t(P))));
    opt.step(0.01);
    cuda::adamw_step(gw.p, gm.p, gv.p, gg.p, gdecay, int64_t(P), 0.01, 0.9, 0.999, 1e-8, 0.1, t);
  }
  check_close(gw.host(), ps.values(), 1e-6);
  cuda::free(gdecay);
}

TEST_CASE("cuda: backward reductions are deterministic") {
  const int64_t B = 4, n = 8, H = 4, Dh = 16, I = 64, S = 40, NB = 8;
  auto q = randn(sz(B * n * I), 50), kv = randn(sz(B * S * 2 * I), 51), bias = randn(sz(NB * H), 52),
       dout = randn(sz(B * n * I), 53);
  std::vector<int32_t> table;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < S; ++j) table.push_back(int32_t((i + S - j) % NB));
  std::vector<std::vector<float>> runs;
  for (int r = 0; r < 2; ++r) {
    Dev gq(q), gkv(kv), gbias(bias), gdout(dout), gout(sz(B * n * I)), gp(sz(B * H * n * S)), gdl(sz(B * H * n * S)),
        gdq(sz(B * n * I)), gdkv(kv.size()), gdb(bias.size());
    DevI gt(table);
    KVRows s{gkv.p, gdkv.p, S * 2 * I, S};
    const AttentionDims d{B, n, H, Dh, S, NB};
    cuda::attention_forward(gout.p, gp.p, gq.p, &s, 1, gt.p, gbias.p, nullptr, d);
    cuda::attention_backward(gdq.p, gdb.p, gdl.p, gdout.p, gq.p, &s, 1, gt.p, gp.p, nullptr, d);
    auto a = gdkv.host(), b = gdb.host(), c = gdq.host();
    a.insert(a.end(), b.begin(), b.end());
    a.insert(a.end(), c.begin(), c.end());
    runs.push_back(a);
  }
  CHECK(runs[0] == runs[1]);
}

TEST_CASE("cuda: dropout masks are the CPU's, bit for bit") {
  const int64_t n = 100003;
  std::vector<float> cpu_mask(sz(n));
  cpu::dropout_mask(cpu_mask.data(), 0.3f, 42, 1000, n);
  Dev g(sz(n));
  cuda::dropout_mask(g.p, 0.3f, 42, 1000, n);
  CHECK(g.host() == cpu_mask);
}

TEST_CASE("cuda: gather lays parts end to end") {
  std::vector<std::vector<float>> parts{randn(5, 60), randn(0, 61), randn(300, 62), randn(1, 63)};
  std::vector<float> want;
  std::deque<Dev> dev;  // Dev owns its memory: no relocation
  std::vector<const float*> ptrs;
  std::vector<int64_t> offsets{0};
  for (const auto& p : parts) {
    want.insert(want.end(), p.begin(), p.end());
    dev.emplace_back(p);
    ptrs.push_back(dev.back().p);
    offsets.push_back(offsets.back() + int64_t(p.size()));
  }
  float* gp = cuda::alloc(ptrs.size() * 2);  // 4 pointers: 8 floats' worth
  float* go = cuda::alloc(offsets.size() * 2);
  cuda::copy(gp, ptrs.data(), ptrs.size() * sizeof(float*), cuda::CopyKind::HostToDevice);
  cuda::copy(go, offsets.data(), offsets.size() * sizeof(int64_t), cuda::CopyKind::HostToDevice);
  Dev out(want.size());
  cuda::gather(out.p, reinterpret_cast<const float* const*>(gp), reinterpret_cast<const int64_t*>(go),
               int64_t(parts.size()), int64_t(want.size()));
  CHECK(out.host() == want);
  cuda::free(gp), cuda::free(go);
}
