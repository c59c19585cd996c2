#!/usr/bin/python3
"""The PyTorch peer for `fbt bench`: the same model (../shared/docs/MODEL.md), written the way a
careful PyTorch user writes it, timed the same way: one warm-up step, then the median of N full
training steps (forward, backward, clipping, AdamW) on random tokens. Prints one JSON line.

- `model.type: feedback` (the default): a loop over windows, projected keys/values cached and
  concatenated as the seed does, kept head-major so no product copies them, autograd. A single
  query per window (seq_len 1) attends with batched products (`--single-query matmul`, the seed's
  way) or with elementwise products and sums (`--single-query elementwise`): PyTorch 1.13's bmm
  of (1 x Dh) rows costs more than the arithmetic, and bench/compare.py times both and compares
  fbt with the faster.
- `model.type: transformer_xl`: every position of a call in parallel, layer by layer, each layer
  attending over [its cached inputs; this call's] with one additive bias-and-mask table per call.

Usage: /usr/bin/python3 bench/peer.py CONFIG.yaml [--steps N] [--single-query matmul|elementwise]
       /usr/bin/python3 bench/peer.py CONFIG.yaml --train N   (train on the config's byte corpus like
                                                         fbt train, then print the validation bpc)
"""
import argparse, json, math, resource, statistics, time

import torch
import torch.nn as nn
import torch.nn.functional as F
try:
    import yaml
except ImportError:  # a bare PyTorch image (the GPU machine): the bench configs are flow mappings
    yaml = None


def load_config(path):
    """The run config; without PyYAML, the one-line flow mappings of bench/*.yaml (key: {k: v, ...})."""
    if yaml is not None:
        return yaml.safe_load(open(path))
    cfg = {}
    for line in open(path):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        key, _, body = line.partition(":")
        body = body.strip()
        if not (body.startswith("{") and body.endswith("}")):
            raise SystemExit(f"{path}: '{key}' is not a one-line mapping; install PyYAML to read this config")
        section = {}
        for item in body[1:-1].split(","):
            k, _, v = item.partition(":")
            v = v.strip()
            try:
                section[k.strip()] = int(v)
            except ValueError:
                try:
                    section[k.strip()] = float(v)
                except ValueError:
                    section[k.strip()] = {"true": True, "false": False}.get(v, v)
        cfg[key.strip()] = section
    return cfg


def bucket(d, nb, maxd):
    e = nb // 2
    if d < e:
        return d
    return min(nb - 1, e + int(math.floor(math.log(d / e) / math.log(maxd / e) * (nb - e))))


class Layer(nn.Module):
    def __init__(self, D, I, Fh, shared_kv):
        super().__init__()
        self.attn_norm = nn.LayerNorm(D)
        self.to_q = nn.Linear(D, I, bias=False)
        self.to_kv = None if shared_kv else nn.Linear(D, 2 * I, bias=False)
        self.to_out = nn.Linear(I, D)
        self.ff_norm = nn.LayerNorm(D)
        self.w_in = nn.Linear(D, 2 * Fh)
        self.w_out = nn.Linear(Fh, D)


class FeedbackTransformer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        D, L, H, Dh = c["dim"], c["depth"], c.get("heads", 8), c.get("dim_head", 64)
        self.H, self.Dh, self.I = H, Dh, H * Dh
        self.nb, self.maxd = c.get("num_buckets", 32), c.get("max_distance", 128)
        self.seq_len, self.mem_len = c.get("seq_len", 1), c["mem_len"]
        self.shared = c.get("shared_kv", True)
        self.token_emb = nn.Embedding(c["num_tokens"], D)
        self.pos_bias = nn.Embedding(self.nb, H)
        self.mem_norm = nn.LayerNorm(D)
        self.shared_kv = nn.Linear(D, 2 * self.I, bias=False) if self.shared else None
        self.layer_weight = nn.Parameter(torch.ones(L + 1))
        self.layers = nn.ModuleList(Layer(D, self.I, c.get("ff_mult", 4) * D, self.shared) for _ in range(L))
        self.out_norm = nn.LayerNorm(D)
        self.to_logits = nn.Linear(D, c["num_tokens"])
        self._bias_idx = {}

    def bias_table(self, n, M):  # (n, M + n) bucket ids, -1 where a query may not look
        key = (n, M)
        if key not in self._bias_idx:
            S = M + (n if n > 1 else 0)
            t = torch.full((n, S), -1, dtype=torch.long)
            for i in range(n):
                for j in range(M):
                    t[i, j] = bucket(i + M - j, self.nb, self.maxd)
                if n > 1:
                    for j in range(i):
                        t[i, M + j] = bucket(i - j, self.nb, self.maxd)
            self._bias_idx[key] = t.to(self.pos_bias.weight.device)
        return self._bias_idx[key]

    def forward(self, x, targets, memory=None):
        B, T = x.shape
        H, Dh, I = self.H, self.Dh, self.I
        elementwise = self.c.get("single_query", "matmul") == "elementwise"
        emb = self.token_emb(x)
        w = self.layer_weight.softmax(0)
        projs = [self.shared_kv] if self.shared else [l.to_kv for l in self.layers]

        def heads(kv):  # (B, n, 2I) -> keys, values (B, H, n, Dh) each
            k, v = kv.split(I, -1)
            return (k.reshape(B, -1, H, Dh).transpose(1, 2).contiguous(),
                    v.reshape(B, -1, H, Dh).transpose(1, 2).contiguous())

        # The cached projected keys/values of the memory, head-major (B, H, M, Dh) so that the
        # attention products read them without a copy (a (B, M, 2I) cache viewed per head is not
        # contiguous: every product would copy it, and autograd would keep the copies); the
        # carried state is a constant.
        mem_kv = [None if memory is None else heads(p(self.mem_norm(memory))) for p in projs]
        written = [] if memory is None else [memory]
        outs = []
        for s in range(0, T, self.seq_len):
            h = emb[:, s:s + self.seq_len]
            n = h.shape[1]
            M = 0 if mem_kv[0] is None else mem_kv[0][0].shape[2]
            table = self.bias_table(n, M)
            visible = table >= 0
            bias = self.pos_bias(table.clamp(min=0)).permute(2, 0, 1)  # (H, n, S)
            hs = [h]
            for li, layer in enumerate(self.layers):
                kvs = mem_kv[0 if self.shared else li]
                proj = projs[0 if self.shared else li]
                parts = [] if kvs is None else [kvs]
                if n > 1:
                    parts.append(heads(proj(self.mem_norm(h))))
                if parts:
                    k = torch.cat([p[0] for p in parts], 2) if len(parts) > 1 else parts[0][0]
                    v = torch.cat([p[1] for p in parts], 2) if len(parts) > 1 else parts[0][1]
                    q = layer.to_q(layer.attn_norm(h)) / math.sqrt(Dh)
                    q = q.view(B, n, H, Dh).transpose(1, 2)
                    if n == 1 and elementwise:  # (B, H, 1, Dh) against (B, H, S, Dh): no bmm
                        logits = (q * k).sum(-1).unsqueeze(-2) + bias
                    else:
                        logits = q @ k.transpose(-1, -2) + bias
                    logits = logits.masked_fill(~visible, float("-inf"))
                    attn = logits.softmax(-1).nan_to_num(0.0)
                    if n == 1 and elementwise:
                        o = (attn.transpose(-1, -2) * v).sum(-2, keepdim=True).transpose(1, 2).reshape(B, n, I)
                    else:
                        o = (attn @ v).transpose(1, 2).reshape(B, n, I)
                    o = layer.to_out(o) * visible.any(-1).view(1, n, 1)  # no key: no bias either
                    h = h + o
                u = layer.w_in(layer.ff_norm(h))
                a, g = u.chunk(2, -1)
                h = h + layer.w_out(a * F.gelu(g))
                hs.append(h)
            outs.append(h)
            mem = (torch.stack(hs) * w.view(-1, 1, 1, 1)).sum(0)
            written.append(mem)
            for pi, proj in enumerate(projs):
                nk, nv = heads(proj(self.mem_norm(mem)))
                if mem_kv[pi] is None:
                    mem_kv[pi] = (nk, nv)
                else:
                    mem_kv[pi] = (torch.cat([mem_kv[pi][0], nk], 2)[:, :, -self.mem_len:],
                                  torch.cat([mem_kv[pi][1], nv], 2)[:, :, -self.mem_len:])
        out = torch.cat(outs, 1)
        logits = self.to_logits(self.out_norm(out))
        new_memory = torch.cat(written, 1)[:, -self.mem_len:].detach()
        return F.cross_entropy(logits.reshape(B * T, -1), targets.reshape(-1)), new_memory


class TransformerXL(nn.Module):
    """The baseline of MODEL.md: each layer attends over its own cached inputs and this call's."""

    def __init__(self, c):
        super().__init__()
        self.c = c
        D, L, H, Dh = c["dim"], c["depth"], c.get("heads", 8), c.get("dim_head", 64)
        self.H, self.Dh, self.I = H, Dh, H * Dh
        self.nb, self.maxd, self.mem_len = c.get("num_buckets", 32), c.get("max_distance", 128), c["mem_len"]
        self.token_emb = nn.Embedding(c["num_tokens"], D)
        self.pos_bias = nn.Embedding(self.nb, H)
        self.layers = nn.ModuleList(Layer(D, self.I, c.get("ff_mult", 4) * D, shared_kv=False) for _ in range(L))
        self.out_norm = nn.LayerNorm(D)
        self.to_logits = nn.Linear(D, c["num_tokens"])
        self._tables = {}

    def table(self, T, m):  # (T, m + T) bucket ids (0 where invisible), visibility, rows that see a key
        if (T, m) not in self._tables:
            ids = torch.zeros((T, m + T), dtype=torch.long)
            visible = torch.zeros((T, m + T), dtype=torch.bool)
            for t in range(T):
                for u in range(max(0, m + t - self.mem_len), m + t):  # key row u is step u - m
                    ids[t, u], visible[t, u] = bucket(m + t - u, self.nb, self.maxd), True
            dev = self.pos_bias.weight.device
            self._tables[(T, m)] = (ids.to(dev), visible.to(dev), visible.any(-1).view(1, T, 1).to(dev))
        return self._tables[(T, m)]

    def forward(self, x, targets, memory=None):
        B, T = x.shape
        H, Dh, I = self.H, self.Dh, self.I
        h = self.token_emb(x)
        m = 0 if memory is None else memory[0].shape[1]
        ids, visible, sees = self.table(T, m)
        bias = self.pos_bias(ids).permute(2, 0, 1).masked_fill(~visible, float("-inf"))  # (H, T, m + T)
        new_memory = []
        for l, layer in enumerate(self.layers):
            full = h if memory is None else torch.cat([memory[l], h], 1)
            new_memory.append(full[:, -self.mem_len:].detach())
            q = (layer.to_q(layer.attn_norm(h)) / math.sqrt(Dh)).view(B, T, H, Dh).transpose(1, 2)
            k, v = layer.to_kv(layer.attn_norm(full)).view(B, m + T, 2, H, Dh).permute(2, 0, 3, 1, 4)
            attn = (q @ k.transpose(-1, -2) + bias).softmax(-1).nan_to_num(0.0)
            o = (attn @ v).transpose(1, 2).reshape(B, T, I)
            h = h + layer.to_out(o) * sees  # a query with no key: no to_out bias either
            u = layer.w_in(layer.ff_norm(h))
            a, g = u.chunk(2, -1)
            h = h + layer.w_out(a * F.gelu(g))
        logits = self.to_logits(self.out_norm(h))
        return F.cross_entropy(logits.reshape(B * T, -1), targets.reshape(-1)), new_memory


def make_model(c):
    return TransformerXL(c) if c.get("type", "feedback") == "transformer_xl" else FeedbackTransformer(c)


def init_like_fbt(model, depth):
    """fbt's initialization (models/feedback_transformer.cpp): normal(0, 0.02), residual output
    projections 0.02/sqrt(2L), biases 0, norm weights 1, layer_weight 1."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name == "layer_weight" or ("norm" in name and name.endswith("weight")):
                p.fill_(1.0)
            elif name.endswith("bias"):
                p.zero_()
            else:
                std = 0.02 / math.sqrt(2 * depth) if name.endswith(("to_out.weight", "w_out.weight")) else 0.02
                p.normal_(0.0, std)


def train_on_corpus(cfg, steps):
    """The same TBPTT recipe as fbt train: contiguous streams, memory carried, warmup + cosine,
    global-norm clipping, AdamW decaying 2-D weights except pos_bias; then the whole valid split."""
    m, t, d = cfg["model"], cfg["train"], cfg["data"]
    torch.manual_seed(t.get("seed", 1234))
    model = make_model(m)
    init_like_fbt(model, m["depth"])
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and n != "pos_bias.weight"]
    rest = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and n != "pos_bias.weight")]
    lr, warmup, min_lr = t.get("lr", 1e-3), t.get("warmup", 100), t.get("min_lr", 1e-4)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": t.get("weight_decay", 0.01)},
                             {"params": rest, "weight_decay": 0.0}], lr=lr,
                            betas=(t.get("beta1", 0.9), t.get("beta2", 0.999)), eps=t.get("eps", 1e-8))
    B, T = t.get("batch_size", 16), t.get("bptt", 64)
    data = torch.tensor(list(open(d["train"], "rb").read()), dtype=torch.long)
    L = len(data) // B
    streams = data[: B * L].view(B, L)
    cursor, memory = 0, None
    cosine = t.get("schedule", "cosine") == "cosine"
    for step in range(steps):
        if cursor + T + 1 > L:
            cursor, memory = 0, None
        x, y = streams[:, cursor:cursor + T], streams[:, cursor + 1:cursor + T + 1]
        cursor += T
        if warmup > 0 and step < warmup:
            cur = lr * (step + 1) / warmup
        elif cosine:
            progress = min(1.0, (step - warmup) / max(1, steps - warmup))
            cur = min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * progress))
        else:
            cur = lr
        for g in opt.param_groups:
            g["lr"] = cur
        opt.zero_grad(set_to_none=True)
        loss, memory = model(x, y, memory)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), t.get("clip", 1.0))
        opt.step()
        if (step + 1) % 100 == 0:
            print(f"peer step {step + 1}: loss {loss.item():.4f}", flush=True)
    valid = torch.tensor(list(open(d["valid"], "rb").read()), dtype=torch.long)
    Bv = t.get("eval_batch_size", 0) or B
    Lv = len(valid) // Bv
    vs = valid[: Bv * Lv].view(Bv, Lv)
    total, count, memory, pos = 0.0, 0, None, 0
    with torch.no_grad():
        while pos < Lv - 1:
            n = min(T, Lv - 1 - pos)
            loss, memory = model(vs[:, pos:pos + n], vs[:, pos + 1:pos + n + 1], memory)
            total += loss.item() * Bv * n
            count += Bv * n
            pos += n
    return total / count


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("config")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--train", type=int, default=0, help="train this many steps on the corpus, print valid bpc")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (the GPU targets: bench/gpu_*.yaml)")
    ap.add_argument("--single-query", choices=["matmul", "elementwise"], default="matmul",
                    help="the feedback model's attention of one query per window: batched products or elementwise")
    args = ap.parse_args()
    if args.train:
        cfg = load_config(args.config)
        torch.set_num_threads(cfg["train"].get("threads", 0) or torch.get_num_threads())
        loss = train_on_corpus(cfg, args.train)
        print(json.dumps({"peer": "pytorch " + torch.__version__, "steps": args.train, "valid_loss": loss,
                          "valid_bpc": loss / math.log(2)}))
        return
    cfg = load_config(args.config)
    m, t = cfg["model"], cfg["train"]
    threads = t.get("threads", 0) or torch.get_num_threads()
    torch.set_num_threads(threads)
    torch.manual_seed(t.get("seed", 1234))
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    m["single_query"] = args.single_query
    model = make_model(m).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=t.get("lr", 1e-3), weight_decay=t.get("weight_decay", 0.01))
    B, T, V = t.get("batch_size", 16), t.get("bptt", 64), m["num_tokens"]

    state = {"memory": None}

    def step():
        x = torch.randint(0, V, (B, T), device=device)
        y = torch.randint(0, V, (B, T), device=device)
        opt.zero_grad(set_to_none=True)
        loss, state["memory"] = model(x, y, state["memory"])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), t.get("clip", 1.0))
        opt.step()
        if cuda:
            torch.cuda.synchronize()  # the step's kernels have run, not only been queued

    step()  # one warm-up step, then the median step, as fbt bench
    secs = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step()
        secs.append(time.perf_counter() - t0)
    median = statistics.median(secs)
    out = {"peer": "pytorch " + torch.__version__, "config": args.config, "device": str(device), "threads": threads,
           "tokens_per_s": B * T / median, "step_ms": 1000 * median,
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if cuda:
        out["gpu"] = torch.cuda.get_device_name(device)
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    print(json.dumps(out))


if __name__ == "__main__":
    main()
