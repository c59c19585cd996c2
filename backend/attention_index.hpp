// The attention kernels' index math in one place: backend/cuda/attention.cu runs it on the
// device, and tests/test_kernels.cpp runs it on the host against the CPU kernels' layouts (its
// only run before a GPU runs it). Layouts: backend/cpu/kernels.hpp (attention_forward).
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "backend/host_device.hpp"
#include "backend/kernel_types.hpp"

namespace fbt::attention_index {

struct Query {
  int64_t b, h, i;  // batch row, head, query
};
// Block t of a per-query grid: t = (b * H + h) * n + i.
FBT_HOST_DEVICE inline Query query_of(int64_t t, const AttentionDims& d) { return {t / (d.n * d.H), (t / d.n) % d.H, t % d.n}; }

// probs, drop and dlogits are (B, H, S, n), key-major: query (b, h, i)'s entry for key j is at
// key_major(d, b, h, i) + j * n.
FBT_HOST_DEVICE inline int64_t key_major(const AttentionDims& d, int64_t b, int64_t h, int64_t i) {
  return (b * d.H + h) * d.S * d.n + i;
}

// q, out and their gradients are (B, n, I): head h's Dh columns of query (b, i) start here.
FBT_HOST_DEVICE inline int64_t query_head(const AttentionDims& d, int64_t b, int64_t i, int64_t h) {
  return (b * d.n + i) * d.H * d.Dh + h * d.Dh;
}

// Key j of the segments' concatenation for batch row b: its segment and row there, and the row's
// start (keys at [0, I), values at [I, 2I)); null past the last segment.
FBT_HOST_DEVICE inline const float* kv_row(const KVRows* segs, int nsegs, int64_t j, int64_t b, int64_t I, int* seg,
                                    int64_t* row) {
  for (int k = 0; k < nsegs; ++k) {
    if (j < segs[k].rows) {
      *seg = k, *row = j;
      return segs[k].data + b * segs[k].batch_stride + j * 2 * I;
    }
    j -= segs[k].rows;
  }
  return nullptr;
}

struct KeyColumn {
  int64_t b, h, j, c;  // batch row, head, key, column of the head
};
// Thread t of the key/value gradient's grid: t = ((b * H + h) * S + j) * Dh + c.
FBT_HOST_DEVICE inline KeyColumn key_column_of(int64_t t, const AttentionDims& d) {
  return {t / (d.Dh * d.S * d.H), (t / (d.Dh * d.S)) % d.H, (t / d.Dh) % d.S, t % d.Dh};
}

// The per-query kernels' block (threads), and the shared memory a block takes: S floats of
// scores then the weighted sum's partials (at least a block's worth) dynamic, and the block
// reduction's kAttnThreads floats static.
constexpr int kAttnThreads = 128;
inline size_t dynamic_shared_bytes(const AttentionDims& d) {
  return sizeof(float) * size_t(d.S + std::max<int64_t>(kAttnThreads, d.Dh));
}
constexpr size_t kStaticSharedBytes = sizeof(float) * kAttnThreads;
// What a block may opt into on the GPUs fbt targets (H100 and H200: 227 KB); the emulated device
// holds calls to it, the CUDA one to what its GPU reports.
constexpr size_t kGpuSharedLimit = 227 * 1024;

// Throws, naming the sizes, when a call's blocks would need more shared memory than `limit`.
inline void check_shared_memory(const AttentionDims& d, size_t limit) {
  const size_t need = dynamic_shared_bytes(d) + kStaticSharedBytes;
  if (need > limit)
    throw std::invalid_argument("cuda attention: " + std::to_string(d.S) + " keys need " + std::to_string(need / 1024) +
                                " KB of shared memory a block, more than the GPU's " + std::to_string(limit / 1024) +
                                " KB; a shorter mem_len or window (seq_len) fits");
}

}  // namespace fbt::attention_index
