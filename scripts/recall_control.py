"""The control of docs/RESULTS.md ("is the slowness fbt's?"): a sparse lookup target, learned by
fbt's models and by a plain PyTorch Transformer of the same width, printing recall accuracy on
fresh lines every 100 steps.

    PYTHONPATH=build/python /usr/bin/python3 scripts/recall_control.py {feedback,xl,torch} [--steps 1500]

Lines "k:......=k": a random letter, filler, and the letter again after '=' (8 positions on from
the first); only that second letter needs the lookup. 8 streams x 32 bytes a step, dim 64,
2 layers, 4 heads, AdamW lr 1e-3 with 20 warmup steps, gradient clip 1, one thread.
"""
import argparse

import numpy as np

parser = argparse.ArgumentParser()
parser.add_argument("model", choices=["feedback", "xl", "torch"])
parser.add_argument("--steps", type=int, default=1500)
parser.add_argument("--lr", type=float, default=1e-3)
parser.add_argument("--filler", type=int, default=6)
args = parser.parse_args()

B, T, D = 8, 32, 64
rng = np.random.default_rng(0)


def lines(keys):
    text = "".join(f"{chr(k)}:{'.' * args.filler}={chr(k)}\n" for k in keys).encode()
    return np.frombuffer(text, dtype=np.uint8).astype(np.int64)


data = lines(rng.integers(ord("a"), ord("z") + 1, 8000))
stream = len(data) // B
streams = data[: B * stream].reshape(B, stream)
probe = lines(rng.integers(ord("a"), ord("z") + 1, 64))
after_eq = np.flatnonzero(probe[:-1] == ord("="))


def batch(step):
    pos = (step * T) % (stream - T - 1)
    return pos, streams[:, pos : pos + T], streams[:, pos + 1 : pos + T + 1]


if args.model == "torch":
    import torch
    import torch.nn as nn

    torch.set_num_threads(1)
    torch.manual_seed(0)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.n1, self.n2 = nn.LayerNorm(D), nn.LayerNorm(D)
            self.att = nn.MultiheadAttention(D, 4, batch_first=True)
            self.ff = nn.Sequential(nn.Linear(D, 4 * D), nn.GELU(), nn.Linear(4 * D, D))

        def forward(self, x, mask):
            h = self.n1(x)
            x = x + self.att(h, h, h, attn_mask=mask, need_weights=False)[0]
            return x + self.ff(self.n2(x))

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.pos = nn.Embedding(256, D), nn.Embedding(T, D)
            self.blocks = nn.ModuleList([Block(), Block()])
            self.norm, self.out = nn.LayerNorm(D), nn.Linear(D, 256)

        def forward(self, x):
            n = x.shape[1]
            mask = torch.triu(torch.ones(n, n, dtype=torch.bool), 1)
            h = self.emb(x) + self.pos(torch.arange(n))
            for b in self.blocks:
                h = b(h, mask)
            return self.out(self.norm(h))

    model = Model()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)

    def train_step(step):
        _, x, y = batch(step)
        for g in opt.param_groups:
            g["lr"] = args.lr * min(1.0, (step + 1) / 20)
        loss = nn.functional.cross_entropy(model(torch.tensor(x)).reshape(-1, 256), torch.tensor(y).reshape(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss.item()

    def probe_logits():  # windows of T positions (the model's absolute positions stop at T)
        with torch.no_grad():
            out = np.zeros((len(probe) - 1, 256), dtype=np.float32)
            for off in range(0, len(probe) - 1, T):
                x = torch.tensor(probe[off : min(off + T, len(probe) - 1)])[None]
                out[off : off + x.shape[1]] = model(x)[0].numpy()
            return out
else:
    import fbt

    fbt.set_num_threads(1)
    kw = dict(num_tokens=256, dim=D, depth=2, heads=4, dim_head=16, mem_len=32, seed=1)
    model = fbt.FeedbackTransformer(**kw) if args.model == "feedback" else fbt.TransformerXL(**kw)
    loop = fbt.TrainLoop(model, lr=args.lr, warmup=20)

    def train_step(step):
        pos, x, y = batch(step)
        if pos < T:
            loop.reset_memory()  # a new pass over the streams
        return loop.step(x, y)["loss"]

    def probe_logits():  # one call, the memory carried through it
        return model(probe[None, :-1])[0]


for step in range(args.steps):
    loss = train_step(step)
    if step % 100 == 99:
        accuracy = np.mean(probe_logits()[after_eq].argmax(-1) == probe[after_eq + 1])
        print(f"{args.model} step {step + 1} loss {loss:.3f} recall {accuracy:.1%}", flush=True)
