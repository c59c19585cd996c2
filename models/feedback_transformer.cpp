#include "models/feedback_transformer.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "util/check.hpp"

namespace fbt {

void Memory::store(const float* src, Device src_dev, const Shape& shape, Device d) {
  const size_t n = size_t(shape.numel());
  if (buf_.device() != d || buf_.size() < n) buf_ = DeviceBuffer(d, n);
  copy_bytes(buf_.data(), d, src, src_dev, sizeof(float) * n);
  shape_ = shape;
}

void Memory::assign(const Tensor& t) { store(t.data, t.device, t.shape, t.device); }

void Memory::assign_host(const std::vector<float>& values, const Shape& shape, Device d) {
  check(int64_t(values.size()) == shape.numel(), "Memory: ", values.size(), " values for ", shape);
  store(values.data(), Device::CPU, shape, d);
}

std::vector<float> Memory::values() const {
  std::vector<float> h(rows() ? size_t(shape_.numel()) : 0);
  copy_bytes(h.data(), Device::CPU, buf_.data(), buf_.device(), sizeof(float) * h.size());
  return h;
}

FeedbackTransformer::FeedbackTransformer(const ModelConfig& cfg, bool initialize) : cfg_(cfg) {
  cfg_.validate();
  const int64_t D = cfg.dim, I = cfg.inner(), L = cfg.depth;
  ParamStore& ps = params_;
  // Registration order follows MODEL.md's table; it is the order of the parameter block.
  token_emb_ = nn::Embedding(ps, "token_emb", cfg.num_tokens, D);
  pos_bias_ = ps.add("pos_bias.weight", {cfg.num_buckets, cfg.heads});
  mem_norm_ = nn::LayerNorm(ps, "mem_norm", D);
  if (cfg.shared_kv) shared_kv_ = ps.add("shared_kv.weight", {2 * I, D});
  layer_weight_ = ps.add("layer_weight", {L + 1});
  for (int64_t l = 0; l < L; ++l) {
    const std::string p = "layers." + std::to_string(l) + ".";
    Layer ly;
    ly.attn_norm = nn::LayerNorm(ps, p + "attn_norm", D);
    ly.to_q = nn::Linear(ps, p + "attn.to_q", D, I, false);
    if (!cfg.shared_kv) ly.to_kv = nn::Linear(ps, p + "attn.to_kv", D, 2 * I, false);
    ly.to_out = nn::Linear(ps, p + "attn.to_out", I, D, true);
    if (cfg.cross_attend) ly.cross = nn::CrossAttention(ps, p + "cross_norm", p + "cross_attn", D, cfg.heads, cfg.dim_head);
    ly.ff = nn::FeedForward(ps, p + "ff_norm", p + "ff", D, cfg.ff_inner());
    layers_.push_back(ly);
  }
  // The products of the time loop (a few rows each) read these weights packed when frozen.
  for (const Layer& ly : layers_) {
    for (const nn::Linear* lin : {&ly.to_q, &ly.to_kv, &ly.to_out, &ly.ff.w_in, &ly.ff.w_out, &ly.cross.to_q, &ly.cross.to_out})
      if (lin->W) ps.pack_for_steps(lin->W);
  }
  if (cfg.shared_kv) ps.pack_for_steps(shared_kv_);
  out_norm_ = nn::LayerNorm(ps, "out_norm", D);
  to_logits_ = nn::Linear(ps, "to_logits", D, cfg.num_tokens, true);
  ps.finalize();

  bucket_of_.assign(size_t(cfg.mem_len + cfg.seq_len + 1), 0);
  for (int64_t d = 1; d < int64_t(bucket_of_.size()); ++d)
    bucket_of_[size_t(d)] = bucket(d, cfg.num_buckets, cfg.max_distance);
  if (initialize) init(0);
}

int32_t FeedbackTransformer::bucket(int64_t d, int64_t num_buckets, int64_t max_distance) {
  const int64_t e = num_buckets / 2;
  if (d < e) return int32_t(d);
  const double v = std::log(double(d) / double(e)) / std::log(double(max_distance) / double(e)) * double(num_buckets - e);
  return int32_t(std::min<int64_t>(num_buckets - 1, e + int64_t(std::floor(v))));
}

void FeedbackTransformer::to(Device d) {
  params_.to(d);
  tape().reset();
  tape().set_device(d);
}

void FeedbackTransformer::init(uint64_t seed) {
  Rng rng(seed);
  const float out_std = 0.02f / std::sqrt(2.0f * float(cfg_.depth));
  for (size_t i = 0; i < params_.size(); ++i) {
    const std::string& name = params_.names()[i];
    float* x = params_.values().data() + params_.offset(i);  // drawn on the host, then sent
    const int64_t n = params_.at(i).value().numel();
    auto ends_with = [&](const std::string& s) {
      return name.size() >= s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0;
    };
    const bool is_norm = name.find("norm") != std::string::npos;
    if (name == "layer_weight" || (is_norm && ends_with(".weight"))) {
      std::fill(x, x + n, 1.f);
    } else if (ends_with(".bias")) {
      std::fill(x, x + n, 0.f);
    } else {
      const bool residual_out = ends_with("to_out.weight") || ends_with("w_out.weight");
      const float std = residual_out ? out_std : 0.02f;
      for (int64_t k = 0; k < n; ++k) x[k] = std * rng.normal();
    }
  }
  params_.sync_to_device();
}

ForwardOutput FeedbackTransformer::forward(const int32_t* tokens, int64_t B, int64_t T, const Tensor* memory,
                                           Var context, const int32_t* targets, const DetachPolicy& policy,
                                           bool train, Rng* rng, ProjectedMemory* projected) {
  const ModelConfig& c = cfg_;
  const int64_t D = c.dim, I = c.inner(), H = c.heads, L = c.depth;
  check(B >= 1 && T >= 1, "forward: tokens must be (B, T) with B, T >= 1, got (", B, ", ", T, ")");
  const int64_t m0 = memory ? memory->shape[1] : 0;
  if (memory)
    check(memory->shape.nd == 3 && memory->shape[0] == B && memory->shape[2] == D && m0 <= c.mem_len,
          "forward: memory ", memory->shape, " is not (B=", B, ", m <= mem_len=", c.mem_len, ", D=", D, ")");
  check(c.cross_attend == bool(context), c.cross_attend ? "forward: cross_attend needs a context"
                                                        : "forward: a context was given but cross_attend is false");
  if (context)
    check(context.shape().nd == 3 && context.shape()[0] == B && context.shape()[1] >= 1 && context.shape()[2] == D,
          "forward: context ", context.shape(), " is not (B=", B, ", Tc >= 1, D=", D, ")");
  if (train && (c.attn_dropout > 0.f || c.ff_dropout > 0.f)) check(rng != nullptr, "forward: training dropout needs a generator");
  const float attn_p = train ? c.attn_dropout : 0.f, ff_p = train ? c.ff_dropout : 0.f;
  const float q_scale = 1.0f / std::sqrt(float(c.dim_head));
  Tape& tp = tape();
  const Device dev = params_.device();
  check(tp.device() == dev, "forward: the model is on ", device_name(dev), " but this thread's tape on ",
        device_name(tp.device()), "; move it with FeedbackTransformer::to()");
  const FrozenWeights frozen = freeze_for(B, T);

  // Memory vectors of this call: rows [0, m0) carried in, then one row per step.
  const int64_t cap = m0 + T;
  Tensor mem_buf = tp.arena().alloc({B, cap, D});
  if (m0) copy_rows(mem_buf.data, cap * D, dev, memory->data, m0 * D, memory->device, B, m0 * D);

  // Key/value caches, one per distinct projection; see the header for the two gradients. Windows
  // on the CPU also keep each cache's head-major mirror (ops.hpp, KVCache).
  const bool mirror = dev == Device::CPU && c.seq_len > 1;
  std::vector<KVCache> caches;
  for (int64_t k = 0; k < (c.shared_kv ? 1 : L); ++k) {
    Var storage = tp.leaf({B, cap, 2 * I});
    Var P = c.shared_kv ? shared_kv_ : layers_[size_t(k)].to_kv.W;
    caches.push_back({P, tp.alias(storage, true), tp.alias(storage, true),
                      mirror ? tp.arena().alloc({B * H, 2, cap, c.dim_head}) : Tensor{}});
  }
  auto project = [&](Var vectors, int64_t row) { project_memory(vectors, mem_norm_.w, mem_norm_.b, caches, row); };
  const uint64_t freeze_id = params_.freeze_id();
  if (m0 && projected && freeze_id && projected->freeze_id == freeze_id) {
    check(projected->B == B && projected->rows == m0 && projected->kv.size() == caches.size(),
          "forward: the projected memory is (B=", projected->B, ", ", projected->rows, " rows, ", projected->kv.size(),
          " caches), the memory is (B=", B, ", ", m0, " rows) with ", caches.size(), " caches");
    for (size_t k = 0; k < caches.size(); ++k) {  // the previous call's projection, same weights
      copy_rows(caches[k].diff.data(), cap * 2 * I, dev, projected->kv[k].data(), m0 * 2 * I, projected->kv[k].device(),
                B, m0 * 2 * I);
      mirror_kv_rows(caches[k], 0, m0);
    }
  } else if (m0) {
    Var carried = tp.leaf_copy(*memory);  // a constant: gradients never flow into a received state
    project(carried, 0);
  }
  std::vector<Var> ctx_kv;
  if (c.cross_attend)
    for (const Layer& ly : layers_) ctx_kv.push_back(ly.cross.to_kv(context));

  Var emb = token_emb_(tokens, Shape{B, T});  // (B,T,D): all positions at once
  ForwardOutput res;
  std::vector<Var> outs;
  std::vector<int32_t> table;
  for (int64_t s = 0; s < T; s += c.seq_len) {
    const int64_t n = std::min(c.seq_len, T - s);
    const int64_t p = m0 + s, lo = std::max<int64_t>(0, p - c.mem_len), M = p - lo;
    // Rows [lo, split) are constants for this window under the policy, [split, p) differentiable.
    const int64_t split = std::clamp<int64_t>(m0 + std::max<int64_t>(0, policy.first_differentiable(s)), lo, p);
    const bool local = n > 1;  // the window's own earlier steps, through layer-local keys
    const int64_t S = M + (local ? n : 0);
    table.assign(size_t(n * S), -1);
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t j = 0; j < M; ++j) table[size_t(i * S + j)] = bucket_of_[size_t(i + M - j)];
      if (local)
        for (int64_t j = 0; j < i; ++j) table[size_t(i * S + M + j)] = bucket_of_[size_t(i - j)];
    }
    std::vector<uint8_t> sees_a_key;  // only the very first step of an empty memory sees none
    if (M == 0) {
      sees_a_key.assign(size_t(B * n), 1);
      for (int64_t b = 0; b < B; ++b) sees_a_key[size_t(b * n)] = 0;
    }

    Var h = slice(emb, 1, s, n);  // (B,n,D)
    std::vector<Var> hs{h};
    // Every layer of a window reads the same memory rows of the one shared cache: their key/value
    // gradient is summed over the layers first (ops.hpp, KVGradGroup). With one query per window
    // the sum does not pay (the rows' read-modify-write is small; measured equal or slower).
    const std::shared_ptr<KVGradGroup> group = c.shared_kv && c.seq_len > 1 ? kv_grad_group() : nullptr;
    for (int64_t l = 0; l < L; ++l) {
      const Layer& ly = layers_[size_t(l)];
      const KVCache& kc = caches[c.shared_kv ? 0 : size_t(l)];
      Var q = scale(ly.to_q(ly.attn_norm(h)), q_scale);  // (B,n,I)
      std::vector<KVSegment> segs;
      if (split > lo) segs.push_back({kc.cnst, lo, split - lo, kc.heads, true});
      if (p > split) segs.push_back({kc.diff, split, p - split, kc.heads, true});
      if (local) segs.push_back({linear(mem_norm_(h), kc.P), 0, n});  // (B,n,2I)
      Var o = ly.to_out(attention(q, segs, table, pos_bias_, H, attn_p, rng, group));
      if (M == 0) o = mask_rows(o, sees_a_key);  // no key: zero attention and no to_out bias
      h = add(h, o);
      if (c.cross_attend) h = add(h, ly.cross(h, ctx_kv[size_t(l)], attn_p, rng));
      h = add(h, ly.ff(h, ff_p, rng));
      hs.push_back(h);
    }
    outs.push_back(h);

    Var mem = c.keep_last_hidden ? h : weighted_sum(layer_weight_, hs);  // (B,n,D)
    res.written.push_back(mem);
    res.written_start.push_back(s);
    copy_rows(mem_buf.data + p * D, cap * D, dev, mem.data(), n * D, dev, B, n * D);
    // The last window's memory is read by no one in this call, unless the projection is kept.
    if (s + n < T || (projected && freeze_id)) project(mem, p);
  }

  Var out = outs.size() == 1 ? outs[0] : concat(outs, 1);  // (B,T,D)
  res.logits = to_logits_(out_norm_(out));                 // (B,T,V)
  if (targets) res.loss = cross_entropy(res.logits, targets);
  const int64_t keep = std::min(c.mem_len, cap);
  res.memory = tp.arena().alloc({B, keep, D});
  copy_rows(res.memory.data, keep * D, dev, mem_buf.data + (cap - keep) * D, cap * D, dev, B, keep * D);
  if (projected) {
    projected->freeze_id = freeze_id;
    projected->B = B, projected->rows = keep;
    projected->kv.resize(caches.size());
    if (freeze_id)
      for (size_t k = 0; k < caches.size(); ++k) {
        DeviceBuffer& kv = projected->kv[k];
        if (kv.size() != size_t(B * keep * 2 * I) || kv.device() != dev) kv = DeviceBuffer(dev, size_t(B * keep * 2 * I));
        copy_rows(kv.data(), keep * 2 * I, dev, caches[k].diff.data() + (cap - keep) * 2 * I, cap * 2 * I, dev, B,
                  keep * 2 * I);
      }
  }
  return res;
}

}  // namespace fbt
