// Naive reference loops in double precision (tests/reference_kernels.cpp): slow, obvious, and the
// yardstick the fast kernels are tested against. They live with the tests, not in the library.
#pragma once
#include <cstdint>

#include "backend/cpu/kernels.hpp"

namespace fbt::ref {
void linear_forward(float* y, const float* x, const float* W, const float* b, int64_t N, int64_t In, int64_t Out);
void layernorm_forward(float* y, const float* x, const float* w, const float* b, int64_t N, int64_t C);
double cross_entropy_forward(const float* logits, const int32_t* targets, int64_t N, int64_t V);
void attention_forward(float* out, const float* q, const fbt::KVRows* segs, int nsegs, const int32_t* bucket,
                       const float* bias, const fbt::AttentionDims& d);
// Gradients (accumulated) from the saved probabilities, one query and key at a time.
void attention_backward(float* dq, float* dbias, const float* dout, const float* q, const fbt::KVRows* segs,
                        int nsegs, const int32_t* bucket, const float* probs, const float* drop,
                        const fbt::AttentionDims& d);
// Attention with an adaptive span (MODEL.md), forward and backward from scratch, one query at a
// time: out, and the gradients of sum(out * dout) added into dq, the segments' key/value gradient
// rows, dbias and dz (H). The chain rule taken link by link (weights, mask, renormalization, softmax).
void attention_span(float* out, float* dq, float* dbias, float* dz, const float* dout, const float* q,
                    const fbt::KVRows* segs, int nsegs, const int32_t* bucket, const float* bias, const float* drop,
                    const fbt::AttentionDims& d, const float* z, const int32_t* distance, int64_t mem_len,
                    int64_t ramp);
}  // namespace fbt::ref
