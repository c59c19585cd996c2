#!/usr/bin/python3
"""A control for the code-execution task: a plain PyTorch Transformer (pre-norm, a learned bias per
head and distance, full attention over the chunk and the 100 tokens before it) trained as fbt's
baseline recipe trains (32 streams x 64 tokens a step, loss on the labelled positions, AdamW),
so that what fbt's models learn can be told apart from what the task allows in as many steps.

    OMP_NUM_THREADS=1 /usr/bin/python3 scripts/algorithmic_torch_control.py DATA_DIR [--steps N]

Prints the valid accuracy on printed values every --eval-every steps.
"""
import argparse
import math
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def read_split(data, split, vocab):
    ids = {w: k for k, w in enumerate(vocab)}
    x = np.array([ids[w] for w in open(f"{data}/{split}.txt").read().split()], dtype=np.int64)
    y = np.array([ids[w] if w != "_" else -1 for w in open(f"{data}/{split}.txt.labels").read().split()], dtype=np.int64)
    return torch.from_numpy(x), torch.from_numpy(y)


class Block(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.n1, self.n2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.out = nn.Linear(d, 3 * d, bias=False), nn.Linear(d, d)
        self.ff = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, h, bias):  # h (B, T, D), bias (H, T, T) with -inf outside the span
        B, T, D = h.shape
        q, k, v = self.qkv(self.n1(h)).view(B, T, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(D // self.heads) + bias, -1) @ v
        h = h + self.out(a.transpose(1, 2).reshape(B, T, D))
        return h + self.ff(self.n2(h))


class Model(nn.Module):
    def __init__(self, V, d=128, depth=4, heads=4, span=100):
        super().__init__()
        self.span = span
        self.emb = nn.Embedding(V, d)
        self.dist_bias = nn.Parameter(torch.zeros(heads, span + 1))
        self.blocks = nn.ModuleList(Block(d, heads) for _ in range(depth))
        self.norm, self.head = nn.LayerNorm(d), nn.Linear(d, V)

    def forward(self, x):  # x (B, T): the context then the chunk; logits for every position
        T = x.shape[1]
        dist = torch.arange(T)[:, None] - torch.arange(T)[None, :]
        allowed = (dist >= 0) & (dist <= self.span)
        bias = self.dist_bias[:, dist.clamp(0, self.span)].masked_fill(~allowed, float("-inf"))
        h = self.emb(x)
        for b in self.blocks:
            h = b(h, bias)
        return self.head(self.norm(h))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--eval-every", type=int, default=500)
    ap.add_argument("--init", choices=["torch", "fbt"], default="torch",
                    help="PyTorch's default initialization, or fbt's (models/model.cpp: every matrix N(0, 0.02), "
                         "the residual outputs N(0, 0.02 / sqrt(2 depth)))")
    a = ap.parse_args()
    torch.manual_seed(1)
    vocab = [w.strip() for w in open(f"{a.data}/vocab.txt")]
    x, y = read_split(a.data, "train", vocab)
    vx, vy = read_split(a.data, "valid", vocab)
    B, T, C = 32, 64, 100
    n = x.numel() // B
    xs, ys = x[: B * n].view(B, n), y[: B * n].view(B, n)
    model = Model(len(vocab))
    if a.init == "fbt":
        with torch.no_grad():
            for name, p in model.named_parameters():
                if p.dim() >= 2:  # norms keep ones and biases zeros, as in fbt
                    residual_out = name.endswith("out.weight") or name.endswith("ff.2.weight")
                    p.normal_(0, 0.02 / math.sqrt(2 * len(model.blocks)) if residual_out else 0.02)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0.01)
    t0 = time.time()

    def evaluate():
        model.eval()
        right = total = 0
        with torch.no_grad():
            for s in range(0, vx.numel() - 1, T):
                lo = max(0, s - C)
                logits = model(vx[None, lo: s + T])[0, s - lo:]
                lab = vy[s: s + T]
                m = lab >= 0
                right += int((logits.argmax(-1)[m] == lab[m]).sum())
                total += int(m.sum())
        model.train()
        return right / total

    for step in range(1, a.steps + 1):
        s = ((step - 1) * T) % (n - T)
        lo = max(0, s - C)
        logits = model(xs[:, lo: s + T])[:, s - lo:]
        loss = F.cross_entropy(logits.reshape(-1, len(vocab)), ys[:, s: s + T].reshape(-1), ignore_index=-1)
        for g in opt.param_groups:
            g["lr"] = a.lr * min(1.0, step / 200)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % a.eval_every == 0:
            print(f"step {step} loss {loss.item():.4f} valid accuracy {evaluate():.4f} ({time.time() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
