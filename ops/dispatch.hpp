// Which kernel family runs an op: the twin on the tape's device. The CPU and CUDA kernels of a
// family share one signature (backend/cpu/kernels.hpp, backend/cuda/kernels.hpp), so an op names both
// and calls the one returned:  kernel(cpu::gelu_forward, cuda::gelu_forward)(y, x, n);
// Ops whose twins differ (the CPU's packed products) branch on on_device() themselves.
#pragma once
#include <cstddef>
#include <cstring>

#include "backend/device.hpp"
#include "backend/rng.hpp"
#include "autograd/tape.hpp"
#include "backend/cpu/kernels.hpp"
#include "backend/cuda/kernels.hpp"

namespace fbt {

inline bool on_device() { return tape().device() != Device::CPU; }

template <class F>
F kernel(F cpu_twin, F cuda_twin) {
  return on_device() ? cuda_twin : cpu_twin;
}

// n host values copied into the step's arena on the tape's device, where kernels read them
// (read-only; see Tape::stage_on_device).
template <class T>
const T* stage(const T* host, size_t n) {
  Tape& t = tape();
  if (t.device() != Device::CPU) return static_cast<const T*>(t.stage_on_device(host, n * sizeof(T)));
  T* p = reinterpret_cast<T*>(t.arena().alloc_floats((n * sizeof(T) + sizeof(float) - 1) / sizeof(float)));
  std::memcpy(p, host, n * sizeof(T));
  return p;
}

class StepWeightPacks;  // ops.hpp

// dW += dy^T x (and db += column sums of dy when db is not null) over N rows, run at the end of
// the backward sweep with every other pair of the same weight (the tape keeps them:
// Tape::deferred_weight_grads; ops/linear.cpp). dy and x must stay valid until then (arena
// storage does).
void defer_weight_grad(float* dW, float* db, const float* dy, const float* x, int64_t N, int64_t In, int64_t Out);

// dx += dy W (dx = dy W without accumulate) for N rows of a linear with weight W (the weight's
// gradient is deferred: defer_weight_grad); reads W's pack from `packs` when it has one.
void linear_input_grad(float* dx, const float* dy, Var W, int64_t N, bool accumulate, const StepWeightPacks* packs);

// dx (+)= the layernorm input gradient for dy into a gradient sink (the CPU kernel overwrites a
// fresh one; the device kernel always adds, and its sinks always accumulate). Nothing when
// dx.data is null.
void layernorm_input_grad(const Tape::GradSink& dx, const float* dy, const float* x, const float* w,
                          const float* mean, const float* rstd, int64_t N, int64_t C);

// Inverted-dropout multipliers for n values in the step's arena (attention and dropout share it).
const float* dropout_mask(float p, Rng& rng, int64_t n);

}  // namespace fbt
