// fbt's public C++ API, one include: #include <fbt/fbt.hpp>; link with `pkg-config --cflags --libs fbt`.
//
//   fbt::FeedbackTransformer model({.num_tokens = 256, .dim = 512, .depth = 6, .heads = 8,
//                                   .dim_head = 64, .seq_len = 2, .mem_len = 256});
//   fbt::State state;                                                  // the carried memory
//   {
//     fbt::StepScope step(model.device());                             // one step's activations
//     fbt::ForwardOutput out = model.forward(tokens.data(), B, T, &state);  // out.logits: (B, T, V)
//   }
//   model.forward(more.data(), B, T, &state);                          // and carry it
//
//   model.to(fbt::Device::CUDA);                                       // on a GPU (fbt --version says)
//
// The surface, by header (layers lowest first, docs/ARCHITECTURE.md):
//   util/      SafeTensors, write_file_atomic
//   backend/   Device, DeviceBuffer, Rng, Comm (the processes of a data-parallel run)
//   autograd/  Tensor, Shape, Var, tape() (backward, zero_grad), StepScope, NoGradScope, detach, ParamStore, to_host
//   ops/       the differentiable ops (linear, layernorm, attention, cross_entropy, ...)
//   nn/        the modules (Linear, LayerNorm, FeedForward, MemoryAttention, Block, ...)
//   models/    ModelConfig (MODEL.md names), Model, FeedbackTransformer, TransformerXL, make_model, State,
//              CallOptions, DetachPolicy, save_model
//   data/      Corpus and StreamBatcher for token files and labelled text, Vocabulary, the code-execution task
//   train/     AdamW, learning_rate, clip_grad_norm, TrainLoop (a training step for your data), Trainer
//              (config-driven runs), evaluate, generate (sampling), load_model (a run or weights file)
//   research/  gradient-flow measurements
// No CUDA type appears in any of them.
#pragma once
#include <vector>

#include "util/safetensors.hpp"
#include "backend/device.hpp"
#include "backend/rng.hpp"
#include "backend/comm.hpp"
#include "autograd/tensor.hpp"
#include "autograd/tape.hpp"
#include "autograd/params.hpp"
#include "ops/ops.hpp"
#include "models/config.hpp"
#include "models/detach_policy.hpp"
#include "models/model.hpp"
#include "models/feedback_transformer.hpp"
#include "models/transformer_xl.hpp"
#include "models/weights.hpp"
#include "data/tokens.hpp"
#include "data/text.hpp"
#include "data/algorithmic.hpp"
#include "train/optimizer.hpp"
#include "train/loop.hpp"
#include "train/evaluate.hpp"
#include "train/sample.hpp"
#include "train/checkpoint.hpp"
#include "train/trainer.hpp"
#include "research/research.hpp"

namespace fbt {

// A value on the tape from host data (e.g. a context for cross-attention).
inline Var from_host(const std::vector<float>& values, const Shape& shape, bool requires_grad = false) {
  if (int64_t(values.size()) != shape.numel()) throw std::invalid_argument("from_host: size does not match " + shape.str());
  return tape().leaf_copy(Tensor{const_cast<float*>(values.data()), shape, Device::CPU}, requires_grad);
}

// A copy of a value on the host, from either device (to_host(Tensor) is backend/device.hpp's;
// a gradient: to_host(v.grad())).
inline std::vector<float> to_host(Var v) { return to_host(v.value()); }

}  // namespace fbt
