// Fast CPU kernels against the naive double-precision references (tests/reference_kernels.cpp),
// on odd shapes and on shapes big enough to take the threaded paths.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include <omp.h>

#include "backend/device.hpp"
#include "gradcheck.hpp"
#include "backend/attention_index.hpp"
#include "backend/cpu/kernels.hpp"
#include "backend/cpu/simd.hpp"
#include "tests/reference_kernels.hpp"

using namespace fbt;
using fbt::testing::fill_normal;
using fbt::testing::sz;

namespace {
// Fast kernels sum in other orders than the double-precision references.
void check_close(const std::vector<float>& a, const std::vector<float>& b, double tol = 1e-4) {
  fbt::testing::check_close(a, b, tol);
}
std::vector<float> randn(int64_t n, uint64_t seed) {
  std::vector<float> v(sz(n));
  fill_normal(v.data(), n, seed);
  return v;
}
}  // namespace

TEST_CASE("kernel: linear matches the naive loop, plain and with packed weights") {
  // Few rows (register blocks of 16/12, 8, 4, 1 rows; one to three rows four panels at a time;
  // partial panels; threads past 32k weights; K past one chunk), windows of hundreds (packed or
  // GEMM), and many (GEMM).
  for (auto [N, In, Out] : {std::tuple<int64_t, int64_t, int64_t>{3, 7, 5}, {1, 1, 1}, {1, 13, 3}, {1, 40, 100},
                            {3, 600, 140}, {9, 48, 70},
                            {16, 256, 200}, {29, 33, 100}, {64, 33, 1100}, {65, 130, 257}, {17, 1100, 40},
                            {300, 40, 50}, {513, 20, 17}}) {
    auto x = randn(N * In, 1), W = randn(Out * In, 2), b = randn(Out, 3), dy = randn(N * Out, 4);
    std::vector<float> slow(sz(N * Out)), fast(sz(N * Out)), fast_p(sz(N * Out));
    ref::linear_forward(slow.data(), x.data(), W.data(), b.data(), N, In, Out);
    cpu::linear_forward(fast.data(), x.data(), W.data(), b.data(), N, In, Out);
    check_close(fast, slow);

    std::vector<float> fwd(sz(cpu::packed_floats(In, Out))), bwd(sz(cpu::packed_floats(Out, In)));
    cpu::pack_panels(fwd.data(), W.data(), In, Out, 1, In);  // W^T
    cpu::pack_panels(bwd.data(), W.data(), Out, In, In, 1);  // W
    {  // both packs in one pass as the layout defines them, streamed (aligned storage) or not
      DeviceBuffer fwd_w(Device::CPU, fwd.size()), bwd_w(Device::CPU, bwd.size());
      cpu::pack_weight(fwd_w.data(), bwd_w.data(), W.data(), Out, In);
      CHECK(std::equal(fwd.begin(), fwd.end(), fwd_w.data()));
      CHECK(std::equal(bwd.begin(), bwd.end(), bwd_w.data()));
      std::vector<float> fwd_u(fwd.size() + 1), bwd_u(bwd.size() + 1);
      cpu::pack_weight(fwd_u.data() + 1, bwd_u.data() + 1, W.data(), Out, In);
      CHECK(std::equal(fwd.begin(), fwd.end(), fwd_u.begin() + 1));
      CHECK(std::equal(bwd.begin(), bwd.end(), bwd_u.begin() + 1));
    }
    cpu::linear_forward_packed(fast_p.data(), x.data(), W.data(), fwd.data(), b.data(), N, In, Out);
    check_close(fast_p, slow);
    cpu::linear_forward_packed(fast_p.data(), x.data(), W.data(), fwd.data(), nullptr, N, In, Out);
    for (int64_t r = 0; r < N; ++r)
      for (int64_t o = 0; o < Out; ++o) slow[sz(r * Out + o)] -= b[sz(o)];
    check_close(fast_p, slow);

    // dx += dy W: from an offset start, so accumulation is checked too.
    std::vector<float> dx_slow(sz(N * In), 0.5f), dx_plain(sz(N * In), 0.5f), dx_packed(sz(N * In), 0.5f);
    for (int64_t r = 0; r < N; ++r)
      for (int64_t i = 0; i < In; ++i) {
        double s = 0;
        for (int64_t o = 0; o < Out; ++o) s += double(dy[sz(r * Out + o)]) * W[sz(o * In + i)];
        dx_slow[sz(r * In + i)] += float(s);
      }
    cpu::linear_backward_input(dx_plain.data(), dy.data(), W.data(), N, In, Out);
    cpu::linear_backward_input_packed(dx_packed.data(), dy.data(), W.data(), bwd.data(), N, In, Out);
    check_close(dx_plain, dx_slow);
    check_close(dx_packed, dx_slow);
  }
}

TEST_CASE("kernel: weight gradient dW += dy^T x matches the naive loop") {
  // Partial panels and groups, one row, rows past one K chunk, several groups per thread.
  for (auto [N, In, Out] : {std::tuple<int64_t, int64_t, int64_t>{1, 5, 3}, {17, 33, 65}, {64, 16, 64}, {300, 70, 130},
                            {700, 40, 300}}) {
    auto dy = randn(N * Out, 5), x = randn(N * In, 6);
    std::vector<float> fast(sz(Out * In), 0.25f), slow(sz(Out * In), 0.25f);
    for (int64_t o = 0; o < Out; ++o)
      for (int64_t i = 0; i < In; ++i) {
        double s = 0;
        for (int64_t r = 0; r < N; ++r) s += double(dy[sz(r * Out + o)]) * x[sz(r * In + i)];
        slow[sz(o * In + i)] += float(s);
      }
    cpu::linear_backward_weight(fast.data(), dy.data(), x.data(), N, In, Out);
    check_close(fast, slow);
  }
}

TEST_CASE("kernel: the weight gradient over row parts equals the one over the rows stacked, bit for bit") {
  // Parts of a sweep's time steps (uneven, some past a K chunk's edge, one empty), with a bias.
  for (auto [In, Out] : {std::pair<int64_t, int64_t>{5, 3}, {33, 65}, {128, 1024}, {70, 130}}) {
    INFO("In " << In << " Out " << Out);
    const std::vector<int64_t> rows{32, 7, 0, 500, 32, 1, 200};
    int64_t N = 0;
    for (int64_t r : rows) N += r;
    auto dy = randn(N * Out, 15), x = randn(N * In, 16);
    std::vector<float> dW(sz(Out * In), 0.25f), db(sz(Out), -0.5f), sW = dW, sb = db;
    std::vector<cpu::RowPart> parts;
    std::vector<std::vector<float>> copies;  // each part in storage of its own, as the arena's steps
    int64_t at = 0;
    for (int64_t r : rows) {
      copies.emplace_back(dy.begin() + at * Out, dy.begin() + (at + r) * Out);
      copies.emplace_back(x.begin() + at * In, x.begin() + (at + r) * In);
      at += r;
    }
    for (size_t k = 0; k < rows.size(); ++k) parts.push_back({copies[2 * k].data(), copies[2 * k + 1].data(), rows[k]});
    cpu::linear_backward_weight_parts(dW.data(), db.data(), parts.data(), int(parts.size()), In, Out);
    cpu::linear_backward_weight(sW.data(), dy.data(), x.data(), N, In, Out);
    cpu::bias_backward(sb.data(), dy.data(), N, Out);
    CHECK(dW == sW);
    CHECK(db == sb);
  }
}

TEST_CASE("kernel: gemm matches the naive loop for every layout, and splitting k or threads changes no bit") {
  // Partial panels, rows split among threads (few columns), one row, k past one chunk, row blocks.
  for (auto [M, N, K] : {std::tuple<int64_t, int64_t, int64_t>{1, 1, 1}, {3, 17, 5}, {40, 33, 700}, {500, 20, 65},
                         {200, 300, 130}, {450, 70, 1100}}) {
    const auto a = randn(M * K, 7), b = randn(K * N, 8);
    for (bool a_t : {false, true})
      for (bool b_t : {false, true}) {
        INFO("M ", M, " N ", N, " K ", K, " A transposed ", a_t, " B transposed ", b_t);
        // A (M,K) stored row-major, or transposed (K,M); B likewise.
        const cpu::MatrixView A = a_t ? cpu::MatrixView{a.data(), 1, M} : cpu::MatrixView{a.data(), K, 1};
        const cpu::MatrixView B = b_t ? cpu::MatrixView{b.data(), 1, K} : cpu::MatrixView{b.data(), N, 1};
        std::vector<float> slow(sz(M * N), 0.5f);
        for (int64_t m = 0; m < M; ++m)
          for (int64_t n = 0; n < N; ++n) {
            double s = 0;
            for (int64_t k = 0; k < K; ++k) s += double(A.data[m * A.rs + k * A.cs]) * B.data[k * B.rs + n * B.cs];
            slow[sz(m * N + n)] += float(s);
          }
        std::vector<float> acc(sz(M * N), 0.5f), fresh(sz(M * N), -7.f);
        cpu::gemm(acc.data(), N, A, B, M, N, K, true);
        check_close(acc, slow);
        cpu::gemm(fresh.data(), N, A, B, M, N, K, false);  // overwrites: 0.5 + A B - 0.5
        for (size_t i = 0; i < fresh.size(); ++i) fresh[i] += 0.5f;
        check_close(fresh, slow);

        // The same product as two calls over consecutive k, on one thread: the same floats.
        const int64_t k1 = K / 3;
        std::vector<float> split(sz(M * N), 0.5f);
        const int threads = omp_get_max_threads();
        omp_set_num_threads(1);
        cpu::gemm(split.data(), N, A, B, M, N, k1, true);
        cpu::gemm(split.data(), N, {A.data + k1 * A.cs, A.rs, A.cs}, {B.data + k1 * B.rs, B.rs, B.cs}, M, N, K - k1, true);
        omp_set_num_threads(threads);
        CHECK(split == acc);

        // A stored the other way (packed k-major when transposed): the same chains, the same floats.
        std::vector<float> other_a(sz(M * K));
        for (int64_t m = 0; m < M; ++m)
          for (int64_t k = 0; k < K; ++k) other_a[sz(a_t ? m * K + k : k * M + m)] = A.data[m * A.rs + k * A.cs];
        const cpu::MatrixView A2 = a_t ? cpu::MatrixView{other_a.data(), K, 1} : cpu::MatrixView{other_a.data(), 1, M};
        std::vector<float> other(sz(M * N), 0.5f);
        cpu::gemm(other.data(), N, A2, B, M, N, K, true);
        CHECK(other == acc);

        // Sums started from a bias (init) are the sums accumulated onto rows holding it.
        const auto bias = randn(N, 9);
        std::vector<float> onto(sz(M * N)), from(sz(M * N), -3.f);
        for (int64_t m = 0; m < M; ++m) std::copy(bias.begin(), bias.end(), onto.begin() + m * N);
        cpu::gemm(onto.data(), N, A, B, M, N, K, true);
        cpu::gemm(from.data(), N, A, B, M, N, K, false, bias.data());
        CHECK(from == onto);
      }
  }
}

TEST_CASE("kernel: layernorm matches the naive loop") {
  for (auto [N, C] : {std::pair<int64_t, int64_t>{3, 7}, {1, 2}, {300, 129}}) {
    auto x = randn(N * C, 6), w = randn(C, 7), b = randn(C, 8);
    for (auto& v : x) v = 3.f * v + 10.f;  // offset: catches a one-pass variance
    std::vector<float> fast(sz(N * C)), slow(sz(N * C)), mean(sz(N)), rstd(sz(N));
    cpu::layernorm_forward(fast.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), N, C);
    ref::layernorm_forward(slow.data(), x.data(), w.data(), b.data(), N, C);
    check_close(fast, slow);
  }
}

TEST_CASE("kernel: cross entropy matches the naive loop") {
  for (auto [N, V] : {std::pair<int64_t, int64_t>{3, 7}, {1, 1}, {257, 300}}) {
    auto logits = randn(N * V, 9);
    std::vector<int32_t> tg(sz(N));
    for (int64_t i = 0; i < N; ++i) tg[sz(i)] = int32_t((i * 7) % V);
    std::vector<float> lse(sz(N));
    float fast = 0.f;
    cpu::cross_entropy_forward(&fast, lse.data(), logits.data(), tg.data(), N, V, N);
    double slow = ref::cross_entropy_forward(logits.data(), tg.data(), N, V);
    CHECK(fast == doctest::Approx(slow / double(N)).epsilon(1e-6));
  }
}

TEST_CASE("kernel: the loss sums its rows in row order, the same float at any thread count") {
  const int64_t N = 4096, V = 257;  // above the size at which the rows run in parallel
  auto logits = randn(N * V, 31);
  std::vector<int32_t> tg(sz(N));
  for (int64_t i = 0; i < N; ++i) tg[sz(i)] = i % 5 == 0 ? -1 : int32_t((i * 13) % V);
  std::vector<float> lse(sz(N));
  float losses[3];
  const int before = omp_get_max_threads();
  for (int threads : {1, 2, 3}) {
    omp_set_num_threads(threads);
    cpu::cross_entropy_forward(&losses[threads - 1], lse.data(), logits.data(), tg.data(), N, V, N - N / 5);
  }
  omp_set_num_threads(before);
  double total = 0.0;  // the definition: each row's loss in double, summed in row order
  for (int64_t r = 0; r < N; ++r) {
    if (tg[sz(r)] < 0) continue;
    const float* lr = logits.data() + r * V;
    const float mx = *std::max_element(lr, lr + V);
    double e = 0.0;
    for (int64_t c = 0; c < V; ++c) e += std::exp(double(lr[c] - mx));
    total += double(mx) + std::log(e) - double(lr[tg[sz(r)]]);
  }
  CHECK(losses[0] == float(total / double(N - N / 5)));
  CHECK(losses[0] == losses[1]);
  CHECK(losses[0] == losses[2]);
}

TEST_CASE("kernel: the embedding gradient sums each token's rows in row order, as a scatter-add") {
  const int64_t N = 300, D = 19, V = 7;
  auto dy = randn(N * D, 32);
  std::vector<int32_t> ids(sz(N));
  for (int64_t i = 0; i < N; ++i) ids[sz(i)] = int32_t((i * i + 3) % V);
  std::vector<float> fast(sz(V * D), 0.5f), slow(sz(V * D), 0.5f);
  const TokenRows g = group_by_token(ids.data(), N);
  cpu::embedding_backward(fast.data(), dy.data(), g.rows.data(), g.tokens.data(), g.starts.data(),
                          int64_t(g.tokens.size()), D);
  for (int64_t r = 0; r < N; ++r)
    for (int64_t c = 0; c < D; ++c) slow[sz(ids[sz(r)] * D + c)] += dy[sz(r * D + c)];
  CHECK(fast == slow);  // bit for bit: the same additions in the same order
}

TEST_CASE("kernel: attention matches the naive loop") {
  for (auto [B, n, H, Dh, M] : {std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t>{2, 3, 2, 3, 4},
                                {1, 1, 1, 1, 1},
                                {3, 1, 4, 16, 0},
                                {5, 8, 4, 16, 37}}) {
    const int64_t I = H * Dh, S = M + n, NB = 6;
    auto q = randn(B * n * I, 10), mem = randn(B * (M + 1) * 2 * I, 11), loc = randn(B * n * 2 * I, 12),
         bias = randn(NB * H, 13);
    std::vector<int32_t> table;
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t j = 0; j < M; ++j) table.push_back(int32_t((i + M - j) % NB));
      for (int64_t j = 0; j < n; ++j) table.push_back(j < i ? int32_t(i - j) % NB : -1);
    }
    KVRows segs[2] = {{mem.data() + 2 * I, nullptr, (M + 1) * 2 * I, M}, {loc.data(), nullptr, n * 2 * I, n}};
    std::vector<float> fast(sz(B * n * I)), slow(sz(B * n * I)), probs(sz(B * H * n * S));
    AttentionDims d{B, n, H, Dh, S};
    cpu::attention_forward(fast.data(), probs.data(), q.data(), segs, 2, table.data(), bias.data(), nullptr, d);
    ref::attention_forward(slow.data(), q.data(), segs, 2, table.data(), bias.data(), d);
    check_close(fast, slow);
  }
}

// The device kernels' index math (backend/attention_index.hpp) read against the CPU kernel's
// layouts: a query's probabilities found at key_major sum to one and weigh the value rows
// kv_row finds into the output query_head points at. Its only run before a GPU runs it.
TEST_CASE("kernel: the device attention's index helpers agree with the CPU attention's layouts") {
  namespace ix = fbt::attention_index;
  const int64_t B = 3, n = 4, H = 2, Dh = 5, M = 6, I = H * Dh, S = M + n;
  auto q = randn(B * n * I, 40), mem = randn(B * (M + 2) * 2 * I, 41), loc = randn(B * n * 2 * I, 42);
  std::vector<int32_t> table;
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < M; ++j) table.push_back(0);
    for (int64_t j = 0; j < n; ++j) table.push_back(j < i ? 0 : -1);
  }
  const KVRows segs[2] = {{mem.data() + 2 * I, nullptr, (M + 2) * 2 * I, M}, {loc.data(), nullptr, n * 2 * I, n}};
  const AttentionDims d{B, n, H, Dh, S};
  std::vector<float> out(sz(B * n * I)), probs(sz(B * H * S * n));
  cpu::attention_forward(out.data(), probs.data(), q.data(), segs, 2, table.data(), nullptr, nullptr, d);
  for (int64_t t = 0; t < B * H * n; ++t) {
    const ix::Query qy = ix::query_of(t, d);
    CHECK(t == (qy.b * H + qy.h) * n + qy.i);
    const float* p = probs.data() + ix::key_major(d, qy.b, qy.h, qy.i);
    double total = 0;
    std::vector<double> o(sz(Dh), 0.0);
    for (int64_t j = 0; j < S; ++j) {
      int seg = -1;
      int64_t row = -1;
      const float* kv = ix::kv_row(segs, 2, j, qy.b, I, &seg, &row);
      REQUIRE(kv != nullptr);
      CHECK(seg == (j < M ? 0 : 1));
      CHECK(row == (j < M ? j : j - M));
      if (table[sz(qy.i * S + j)] < 0) CHECK(p[j * n] == 0.f);
      total += p[j * n];
      for (int64_t c = 0; c < Dh; ++c) o[sz(c)] += double(p[j * n]) * kv[I + qy.h * Dh + c];
    }
    CHECK(total == doctest::Approx(1.0).epsilon(1e-5));
    for (int64_t c = 0; c < Dh; ++c)
      CHECK(out[sz(ix::query_head(d, qy.b, qy.i, qy.h) + c)] == doctest::Approx(o[sz(c)]).epsilon(1e-4));
  }
  int seg = 0;
  int64_t row = 0;
  CHECK(ix::kv_row(segs, 2, S, 0, I, &seg, &row) == nullptr);  // past the last key
  for (int64_t t = 0; t < B * H * S * Dh; ++t) {
    const ix::KeyColumn k = ix::key_column_of(t, d);
    CHECK(t == ((k.b * H + k.h) * S + k.j) * Dh + k.c);
  }
}

TEST_CASE("kernel: attention gradients match the naive loop, single queries and windows, with dropout") {
  for (auto [B, n, H, Dh, M] : {std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t>{2, 3, 2, 3, 4},
                                {1, 1, 2, 16, 9},
                                {2, 7, 3, 19, 37},
                                {2, 32, 2, 64, 256}}) {
    for (bool with_drop : {false, true}) {
      INFO("B " << B << " n " << n << " Dh " << Dh << " M " << M << " dropout " << with_drop);
      const int64_t I = H * Dh, S = M + n, NB = 6;
      auto q = randn(B * n * I, 20), mem = randn(B * (M + 1) * 2 * I, 21), loc = randn(B * n * 2 * I, 22),
           bias = randn(NB * H, 23), dout = randn(B * n * I, 24);
      std::vector<int32_t> table;
      for (int64_t i = 0; i < n; ++i) {
        for (int64_t j = 0; j < M; ++j) table.push_back(int32_t((i + M - j) % NB));
        for (int64_t j = 0; j < n; ++j) table.push_back(j < i ? int32_t(i - j) % NB : -1);
      }
      std::vector<float> drop(sz(B * H * n * S));
      cpu::dropout_mask(drop.data(), 0.25f, 7, 0, int64_t(drop.size()));
      const float* dr = with_drop ? drop.data() : nullptr;
      const AttentionDims d{B, n, H, Dh, S, NB};
      std::vector<float> out(sz(B * n * I)), probs(sz(B * H * n * S)), dl(probs.size());
      std::vector<float> dq(sz(B * n * I), 0.5f), dmem(mem.size(), 0.25f), dloc(loc.size(), 0.f), db(bias.size(), 1.f);
      std::vector<float> rq = dq, rmem = dmem, rloc = dloc, rb = db;
      KVRows fast[2] = {{mem.data() + 2 * I, dmem.data() + 2 * I, (M + 1) * 2 * I, M},
                             {loc.data(), dloc.data(), n * 2 * I, n}};
      KVRows slow[2] = {{mem.data() + 2 * I, rmem.data() + 2 * I, (M + 1) * 2 * I, M},
                             {loc.data(), rloc.data(), n * 2 * I, n}};
      cpu::attention_forward(out.data(), probs.data(), q.data(), fast, 2, table.data(), bias.data(), dr, d);
      cpu::attention_backward(dq.data(), db.data(), dl.data(), dout.data(), q.data(), fast, 2, table.data(), probs.data(),
                              dr, d);
      ref::attention_backward(rq.data(), rb.data(), dout.data(), q.data(), slow, 2, table.data(), probs.data(), dr, d);
      check_close(dq, rq, 1e-4), check_close(dmem, rmem, 1e-4), check_close(dloc, rloc, 1e-4), check_close(db, rb, 1e-4);
    }
  }
}

TEST_CASE("kernel: attention matches the naive loop at every head size, single queries and windows, with and without memory") {
  // dim_head 8 to 128 (partial vectors at 8, 24 and 48 with 16 lanes), one query (the exact
  // model's step) or a window, carried memory rows or none, memory attention (bias, causal
  // window) or cross-attention (all keys visible, no bias), backward with and without dropout.
  for (int64_t Dh : {8, 16, 24, 32, 48, 64, 128})
    for (int64_t n : {1, 6})
      for (int64_t M : {0, 13})
        for (bool cross : {false, true}) {
          INFO("Dh " << Dh << " n " << n << " M " << M << " cross " << cross);
          const int64_t B = 3, H = 2, I = H * Dh, S = M + n, NB = 5;
          auto q = randn(B * n * I, 40), mem = randn(B * (M + 1) * 2 * I, 41), loc = randn(B * n * 2 * I, 42),
               bias = randn(NB * H, 43), dout = randn(B * n * I, 44);
          std::vector<int32_t> table;
          for (int64_t i = 0; i < n; ++i) {
            for (int64_t j = 0; j < M; ++j) table.push_back(cross ? 0 : int32_t((i + M - j) % NB));
            for (int64_t j = 0; j < n; ++j) table.push_back(cross ? 0 : j <= i ? int32_t(i - j) % NB : -1);
          }
          const float* bs = cross ? nullptr : bias.data();
          const AttentionDims d{B, n, H, Dh, S, cross ? 0 : NB};
          std::vector<float> fast(sz(B * n * I)), slow(fast.size()), probs(sz(B * H * n * S)), dl(probs.size());
          KVRows segs[2] = {{mem.data() + 2 * I, nullptr, (M + 1) * 2 * I, M}, {loc.data(), nullptr, n * 2 * I, n}};
          cpu::attention_forward(fast.data(), probs.data(), q.data(), segs, 2, table.data(), bs, nullptr, d);
          ref::attention_forward(slow.data(), q.data(), segs, 2, table.data(), bs, d);
          check_close(fast, slow);
          std::vector<float> drop(probs.size());
          cpu::dropout_mask(drop.data(), 0.25f, 3, 0, int64_t(drop.size()));
          for (bool with_drop : {false, true}) {
            INFO("dropout " << with_drop);
            const float* dr = with_drop ? drop.data() : nullptr;
            cpu::attention_forward(fast.data(), probs.data(), q.data(), segs, 2, table.data(), bs, dr, d);
            std::vector<float> dq(sz(B * n * I), 0.5f), dmem(mem.size(), 0.25f), dloc(loc.size(), 0.f),
                db(bias.size(), 1.f);
            std::vector<float> rq = dq, rmem = dmem, rloc = dloc, rb = db;
            KVRows fg[2] = {{mem.data() + 2 * I, dmem.data() + 2 * I, (M + 1) * 2 * I, M},
                                 {loc.data(), dloc.data(), n * 2 * I, n}};
            KVRows rg[2] = {{mem.data() + 2 * I, rmem.data() + 2 * I, (M + 1) * 2 * I, M},
                                 {loc.data(), rloc.data(), n * 2 * I, n}};
            cpu::attention_backward(dq.data(), cross ? nullptr : db.data(), dl.data(), dout.data(), q.data(), fg, 2,
                                    table.data(), probs.data(), dr, d);
            ref::attention_backward(rq.data(), cross ? nullptr : rb.data(), dout.data(), q.data(), rg, 2, table.data(),
                                    probs.data(), dr, d);
            check_close(dq, rq), check_close(dmem, rmem), check_close(dloc, rloc), check_close(db, rb);
          }
        }
}

TEST_CASE("kernel: window attention reads a head-major mirror of the cache in place, to the same floats") {
  // Memory rows [1, 1 + M) of a cache of R = M + 1 rows in two adjacent segments (the two views of
  // one cache), then the window's own rows; the memory mirrored (both parts, one part, none).
  for (auto [B, n, H, Dh, M, split] : {std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int64_t>{2, 3, 2, 5, 9, 4},
                                       {2, 32, 2, 64, 96, 40}}) {
    const int64_t I = H * Dh, R = M + 1, S = M + n, NB = 6;
    auto q = randn(B * n * I, 30), mem = randn(B * R * 2 * I, 31), loc = randn(B * n * 2 * I, 32),
         bias = randn(NB * H, 33), dout = randn(B * n * I, 34);
    std::vector<int32_t> table;
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t j = 0; j < M; ++j) table.push_back(int32_t((i + M - j) % NB));
      for (int64_t j = 0; j < n; ++j) table.push_back(j < i ? int32_t(i - j) % NB : -1);
    }
    std::vector<float> drop(sz(B * H * n * S)), heads(sz(B * H * 2 * R * Dh), -1.f);
    cpu::dropout_mask(drop.data(), 0.25f, 9, 0, int64_t(drop.size()));
    cpu::mirror_kv_heads(heads.data(), mem.data(), B, R, H, Dh, 1, R);
    const AttentionDims d{B, n, H, Dh, S, NB};
    std::vector<std::vector<float>> results;
    // One set of buffers for every run, so the comparison is exact.
    std::vector<float> out(sz(B * n * I)), probs(sz(B * H * n * S)), dl(probs.size()), dq, dmem, dloc, db;
    for (int mirrored : {0, 1, 2}) {  // no mirror, the first memory part only, both
      INFO("n " << n << " mirrored parts " << mirrored);
      dq.assign(sz(B * n * I), 0.5f), dmem.assign(mem.size(), 0.25f), dloc.assign(loc.size(), 0.f);
      db.assign(bias.size(), 1.f);
      KVRows segs[3] = {{mem.data() + 2 * I, dmem.data() + 2 * I, R * 2 * I, split},
                             {mem.data() + (1 + split) * 2 * I, dmem.data() + (1 + split) * 2 * I, R * 2 * I, M - split},
                             {loc.data(), dloc.data(), n * 2 * I, n}};
      if (mirrored >= 1) segs[0].heads = heads.data() + 1 * Dh, segs[0].heads_rows = R;
      if (mirrored >= 2) segs[1].heads = heads.data() + (1 + split) * Dh, segs[1].heads_rows = R;
      cpu::attention_forward(out.data(), probs.data(), q.data(), segs, 3, table.data(), bias.data(), drop.data(), d);
      cpu::attention_backward(dq.data(), db.data(), dl.data(), dout.data(), q.data(), segs, 3, table.data(),
                              probs.data(), drop.data(), d);
      std::vector<float> all;
      for (const auto* v : {&out, &probs, &dq, &dmem, &dloc, &db}) all.insert(all.end(), v->begin(), v->end());
      if (!results.empty()) CHECK(all == results.front());
      results.push_back(all);
    }
  }
}

TEST_CASE("kernel: the memory rows' key/value gradient summed over several calls equals each call adding its own") {
  // Three calls (layers of a window) over the same memory rows [1, 1 + M) of a cache, in two
  // segments, and each over rows of its own, with dropout and single queries.
  for (auto [B, n, H, Dh, M, split] : {std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int64_t>{2, 3, 2, 5, 9, 4},
                                       {2, 32, 2, 16, 40, 0},
                                       {3, 1, 2, 8, 7, 3}}) {
    INFO("n " << n << " M " << M);
    const int64_t I = H * Dh, R = M + 1, S = M + n, NB = 6, calls = 3;
    auto mem = randn(B * R * 2 * I, 40), bias = randn(NB * H, 41);
    std::vector<int32_t> table;
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t j = 0; j < M; ++j) table.push_back(int32_t((i + M - j) % NB));
      for (int64_t j = 0; j < n; ++j) table.push_back(j < i ? int32_t(i - j) % NB : -1);
    }
    const AttentionDims d{B, n, H, Dh, S, NB};
    std::vector<std::vector<float>> q, loc, dout, probs, dl, drop;
    for (int64_t c = 0; c < calls; ++c) {
      q.push_back(randn(B * n * I, 50 + c)), loc.push_back(randn(B * n * 2 * I, 60 + c));
      dout.push_back(randn(B * n * I, 70 + c));
      probs.emplace_back(sz(B * H * n * S)), dl.emplace_back(sz(B * H * n * S)), drop.emplace_back(sz(B * H * n * S));
      cpu::dropout_mask(drop[sz(c)].data(), 0.2f, 11, uint64_t(c) * 1000, int64_t(drop[sz(c)].size()));
    }
    std::vector<float> each(mem.size(), 0.25f), summed(mem.size(), 0.25f), dloc(loc[0].size());
    std::vector<AttentionGradPart> parts;
    for (int variant = 0; variant < 2; ++variant) {
      float* g = variant == 0 ? each.data() : summed.data();
      for (int64_t c = calls - 1; c >= 0; --c) {  // backward order
        std::vector<float> out(sz(B * n * I)), dq(sz(B * n * I), 0.f), db(bias.size(), 0.f);
        KVRows segs[3] = {{mem.data() + 2 * I, variant == 0 ? g + 2 * I : nullptr, R * 2 * I, split},
                               {mem.data() + (1 + split) * 2 * I, variant == 0 ? g + (1 + split) * 2 * I : nullptr,
                                R * 2 * I, M - split},
                               {loc[sz(c)].data(), dloc.data(), n * 2 * I, n}};
        const int first = split == 0 ? 1 : 0;  // an empty first segment is left out
        cpu::attention_forward(out.data(), probs[sz(c)].data(), q[sz(c)].data(), segs + first, 3 - first, table.data(),
                               bias.data(), drop[sz(c)].data(), d);
        cpu::attention_backward(dq.data(), db.data(), dl[sz(c)].data(), dout[sz(c)].data(), q[sz(c)].data(),
                                segs + first, 3 - first, table.data(), probs[sz(c)].data(), drop[sz(c)].data(), d);
        if (variant == 1)
          parts.push_back({probs[sz(c)].data(), drop[sz(c)].data(), dl[sz(c)].data(), q[sz(c)].data(), dout[sz(c)].data()});
      }
      if (variant == 1) {
        const int first = split == 0 ? 1 : 0;
        KVRows mem_segs[2] = {{mem.data() + 2 * I, g + 2 * I, R * 2 * I, split},
                                   {mem.data() + (1 + split) * 2 * I, g + (1 + split) * 2 * I, R * 2 * I, M - split}};
        cpu::attention_kv_grad_sum(mem_segs + first, 2 - first, parts.data(), int(parts.size()), d);
      }
    }
    check_close(summed, each, 1e-5);
  }
}

TEST_CASE("kernel: exp and erf within 2 ulp of libm in every lane, the partial vector the same bits as a whole one") {
  namespace simd = cpu::simd;
  std::vector<float> x;
  for (float v = -87.f; v <= 88.f; v += 0.01171875f) x.push_back(v);  // every lane position meets many values
  std::vector<float> e(x.size()), f(x.size());
  simd::each_vector(int64_t(x.size()), [&](const simd::Lanes& l) {
    l.store(e.data(), simd::vexp(l.load(x.data())));
    l.store(f.data(), simd::verf(l.load(x.data())));
  });
  double worst_exp = 0, worst_erf = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    worst_exp = std::max(worst_exp, std::abs(e[i] - std::exp(double(x[i]))) / std::exp(double(x[i])));
    worst_erf = std::max(worst_erf, std::abs(f[i] - std::erf(double(x[i]))));
  }
  CHECK(worst_exp < 2.4e-7);  // 2 ulp of float
  CHECK(worst_erf < 2.4e-7);
  // The edges: -inf and far below give 0 (a softmax's invisible keys), NaN stays NaN, exp(0) = 1.
  std::vector<float> edge{-INFINITY, -1000.f, -88.5f, 0.f, NAN}, out(edge.size());
  simd::each_vector(int64_t(edge.size()), [&](const simd::Lanes& l) { l.store(out.data(), simd::vexp(l.load(edge.data()))); });
  CHECK(out[0] == 0.f);
  CHECK(out[1] == 0.f);
  CHECK(out[2] == 0.f);
  CHECK(out[3] == 1.f);
  CHECK(std::isnan(out[4]));
  // Element i at any offset within a vector, in a whole vector or a masked partial one: one value.
  for (int64_t shift = 1; shift < simd::kLanes + 3; ++shift) {
    std::vector<float> part(sz(shift + 5));
    simd::each_vector(shift + 5, [&](const simd::Lanes& l) { l.store(part.data(), simd::vexp(l.load(x.data() + 100))); });
    for (int64_t i = 0; i < shift + 5; ++i) CHECK(part[sz(i)] == e[sz(100 + i)]);
  }
}

TEST_CASE("kernel: a 16-lane sum adds its lanes in AVX-512's order at every vector width") {
  namespace simd = cpu::simd;
  float v[16];  // magnitudes far apart, so another order would round differently
  for (int i = 0; i < 16; ++i) v[i] = std::ldexp(1.f + 0.1f * float(i), (i * 7) % 23 - 11) * (i % 3 ? 1.f : -1.f);
  simd::vsum a;
  for (int q = 0; q < simd::kSumParts; ++q) a.part[q] = simd::vload(v + q * simd::kLanes);
  float t[8];
  for (int i = 0; i < 8; ++i) t[i] = v[i] + v[i + 8];
  for (int i = 0; i < 4; ++i) t[i] = t[i] + t[i + 4];
  for (int i = 0; i < 2; ++i) t[i] = t[i] + t[i + 2];
  CHECK(simd::hsum(a) == t[0] + t[1]);
  // dot() takes the same tree, its leftover lanes masked in: n = 16 + 5 against the terms by hand.
  std::vector<float> p(21), ones(21, 1.f);
  for (int i = 0; i < 21; ++i) p[sz(i)] = v[i % 16] * float(1 + i / 16);
  float w[16];
  for (int i = 0; i < 16; ++i) w[i] = i < 5 ? p[sz(16 + i)] : 0.f;  // the second accumulator
  for (int i = 0; i < 8; ++i) t[i] = (p[sz(i)] + w[i]) + (p[sz(i + 8)] + w[i + 8]);
  for (int i = 0; i < 4; ++i) t[i] = t[i] + t[i + 4];
  for (int i = 0; i < 2; ++i) t[i] = t[i] + t[i + 2];
  CHECK(simd::dot(p.data(), ones.data(), 21) == t[0] + t[1]);
}

TEST_CASE("kernel: gelu and geglu agree with erf") {
  std::vector<float> x{-3.f, -0.5f, 0.f, 0.7f, 2.5f}, y(5), u1(10, 1.f);  // values 1: geglu gives gelu(gate)
  std::copy(x.begin(), x.end(), u1.begin() + 5);
  cpu::geglu_forward(y.data(), u1.data(), 1, 5);
  for (int i = 0; i < 5; ++i)
    CHECK(y[sz(i)] == doctest::Approx(0.5 * x[sz(i)] * (1 + std::erf(x[sz(i)] / std::sqrt(2.0)))).epsilon(1e-6));
  std::vector<float> u{2.f, -1.f, 0.5f, 1.5f}, g(2);  // value [2, -1], gate [0.5, 1.5]
  cpu::geglu_forward(g.data(), u.data(), 1, 2);
  CHECK(g[0] == doctest::Approx(2.0 * 0.5 * 0.5 * (1 + std::erf(0.5 / std::sqrt(2.0)))).epsilon(1e-6));
  CHECK(g[1] == doctest::Approx(-1.0 * 1.5 * 0.5 * (1 + std::erf(1.5 / std::sqrt(2.0)))).epsilon(1e-6));
}

// The queued key/value gradient of single queries (ops.hpp, KVGradQueue): each part's share of
// each row, in part order, must be the same FMAs as the naive loop below makes, bit for bit: head
// sizes with partial vectors, parts that start on different rows, rows split between two
// gradient views, dropout, spans, and row ranges that cut the parts.
TEST_CASE("kernel: queued key/value gradients are the naive loop's bits") {
  for (int64_t Dh : {3, 8, 16, 24, 32, 40, 64})
    for (bool drop : {false, true})
      for (bool raw : {false, true}) {
        INFO("Dh " << Dh << " dropout " << drop << " span " << raw);
        const int64_t B = 2, H = 3, I = H * Dh, R = 30, S = 12;
        const int nparts = 7;
        std::vector<float> views[2] = {randn(B * R * 2 * I, 60), randn(B * R * 2 * I, 61)};
        std::vector<std::vector<float>> data;  // each part's probs, drop, raw, dlogits, q, dout
        std::vector<DeferredKVPart> parts;
        for (int t = 0; t < nparts; ++t) {
          const int64_t top = 24 - t, first = top - S;  // keys [first, top): rows first .. top - 1
          std::vector<float> pr = randn(B * H * S, 70 + t), dr(sz(B * H * S)), rw = randn(B * H * S, 90 + t);
          for (int64_t e = 0; e < B * H * S; ++e) {
            if (e % 5 == 0) pr[sz(e)] = 0.f;  // invisible keys
            dr[sz(e)] = e % 3 == 0 ? 0.f : 1.25f;
            if (e % 7 == 0) rw[sz(e)] = 0.f;
          }
          data.push_back(pr), data.push_back(dr), data.push_back(rw), data.push_back(randn(B * H * S, 110 + t));
          data.push_back(randn(B * I, 130 + t)), data.push_back(randn(B * I, 150 + t));
          const size_t k = data.size() - 6;
          DeferredKVPart part{data[k].data(), drop ? data[k + 1].data() : nullptr, raw ? data[k + 2].data() : nullptr,
                              data[k + 3].data(), data[k + 4].data(), data[k + 5].data(), S, {}, 0};
          // The first keys in one view, the rest in the other (a policy's split), on alternate parts.
          const int64_t split = t % 2 ? first + 5 : first;
          if (split > first) part.segs[part.nsegs++] = {views[1].data() + first * 2 * I, R * 2 * I, first, split - first, 0};
          part.segs[part.nsegs++] = {views[0].data() + split * 2 * I, R * 2 * I, split, top - split, split - first};
          parts.push_back(part);
        }
        for (auto [r0, r1] : {std::pair<int64_t, int64_t>{0, R}, {13, 20}, {5, 6}}) {
          std::vector<float> fast[2] = {views[0], views[1]}, naive[2] = {views[0], views[1]};
          auto view_of = [&](const float* g) { return int(g >= views[1].data() && g < views[1].data() + views[1].size()); };
          std::vector<DeferredKVPart> fp = parts;  // pointing into fast's views
          for (DeferredKVPart& p : fp)
            for (int k = 0; k < p.nsegs; ++k) {
              const int v = view_of(p.segs[k].grad);
              p.segs[k].grad = fast[v].data() + (p.segs[k].grad - views[v].data());
            }
          cpu::add_deferred_kv_grads(fp.data(), nparts, B, H, Dh, r0, r1);
          for (const DeferredKVPart& p : parts)
            for (int k = 0; k < p.nsegs; ++k) {
              const DeferredKVSegment& sg = p.segs[k];
              const int v = view_of(sg.grad);
              float* base = naive[v].data() + (sg.grad - views[v].data());
              for (int64_t row = std::max(r0, sg.row_begin); row < std::min(r1, sg.row_begin + sg.rows); ++row)
                for (int64_t b = 0; b < B; ++b)
                  for (int64_t h = 0; h < H; ++h) {
                    const int64_t at = (b * H + h) * S + sg.key + row - sg.row_begin;
                    float* g = base + b * sg.batch_stride + (row - sg.row_begin) * 2 * I + h * Dh;
                    const float pw = p.probs[at], m = p.drop ? p.drop[at] : 1.f, live = p.raw ? p.raw[at] : pw;
                    for (int64_t e = 0; e < Dh; ++e) {
                      if (m != 0.f && pw != 0.f) g[I + e] = std::fma(pw * m, p.dout[b * I + h * Dh + e], g[I + e]);
                      if (live != 0.f) g[e] = std::fma(p.dlogits[at], p.q[b * I + h * Dh + e], g[e]);
                    }
                  }
            }
          INFO("rows " << r0 << " to " << r1);
          for (int v = 0; v < 2; ++v) CHECK(std::memcmp(fast[v].data(), naive[v].data(), sizeof(float) * naive[v].size()) == 0);
        }
      }
}

// Adaptive attention span (MODEL.md): the kernels' masked, renormalized weights and every
// gradient, the span ratios' included, against the reference's link-by-link chain rule; single
// queries and windows, head sizes with and without a partial vector, dropout, span ratios at 0
// (the ramp's ends land on whole distances: their gradient passes, as PyTorch's clamp lets it),
// inside and at 1.
TEST_CASE("kernel: attention with an adaptive span matches the naive loop, gradients of the spans included") {
  for (auto [B, n, H, Dh, M] : {std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t>{2, 1, 3, 8, 29},
                                {1, 1, 2, 32, 40},
                                {2, 5, 2, 24, 13},
                                {2, 6, 3, 16, 0}})
    for (int64_t ramp : {1, 4})
      for (bool with_drop : {false, true}) {
        INFO("B " << B << " n " << n << " Dh " << Dh << " M " << M << " ramp " << ramp << " dropout " << with_drop);
        const int64_t I = H * Dh, S = M + n, NB = 6, mem_len = 23;
        auto q = randn(B * n * I, 50), mem = randn(B * (M + 1) * 2 * I, 51), loc = randn(B * n * 2 * I, 52),
             bias = randn(NB * H, 53), dout = randn(B * n * I, 54);
        std::vector<int32_t> table, distance;
        for (int64_t i = 0; i < n; ++i) {
          for (int64_t j = 0; j < M; ++j) table.push_back(int32_t((i + M - j) % NB)), distance.push_back(int32_t(i + M - j));
          for (int64_t j = 0; j < n; ++j)
            table.push_back(j < i ? int32_t(i - j) % NB : -1), distance.push_back(j < i ? int32_t(i - j) : 0);
        }
        std::vector<float> z = {0.f, 0.37f, 1.f};
        z.resize(sz(H));
        std::vector<float> drop(sz(B * H * n * S));
        cpu::dropout_mask(drop.data(), 0.25f, 9, 0, int64_t(drop.size()));
        const float* dr = with_drop ? drop.data() : nullptr;
        const AttentionDims d{B, n, H, Dh, S, NB};
        std::vector<float> out(sz(B * n * I)), rout(out.size()), probs(sz(B * H * n * S)), raw(probs.size()),
            dl(probs.size());
        std::vector<float> dq(sz(B * n * I), 0.5f), dmem(mem.size(), 0.25f), dloc(loc.size(), 0.f), db(bias.size(), 1.f),
            dz(sz(H), 2.f);
        std::vector<float> rq = dq, rmem = dmem, rloc = dloc, rb = db, rz = dz;
        KVRows fast[2] = {{mem.data() + 2 * I, dmem.data() + 2 * I, (M + 1) * 2 * I, M}, {loc.data(), dloc.data(), n * 2 * I, n}};
        KVRows slow[2] = {{mem.data() + 2 * I, rmem.data() + 2 * I, (M + 1) * 2 * I, M}, {loc.data(), rloc.data(), n * 2 * I, n}};
        AttentionSpan span{z.data(), dz.data(), distance.data(), raw.data(), mem_len, ramp};
        cpu::attention_forward(out.data(), probs.data(), q.data(), fast, 2, table.data(), bias.data(), dr, d, span);
        cpu::attention_backward(dq.data(), db.data(), dl.data(), dout.data(), q.data(), fast, 2, table.data(),
                                probs.data(), dr, d, span);
        ref::attention_span(rout.data(), rq.data(), rb.data(), rz.data(), dout.data(), q.data(), slow, 2, table.data(),
                            bias.data(), dr, d, z.data(), distance.data(), mem_len, ramp);
        check_close(out, rout), check_close(dq, rq), check_close(dmem, rmem), check_close(dloc, rloc);
        check_close(db, rb), check_close(dz, rz, 1e-3);
        CHECK(dz != std::vector<float>(sz(H), 2.f));  // the spans do get a gradient
      }
}
