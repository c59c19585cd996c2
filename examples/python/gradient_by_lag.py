"""A notebook-style tour of fbt from Python: train a small Feedback Transformer to copy a letter
from LAG steps back, then measure how far back its gradient reaches through the memory, with
and without truncation, and plot it.

    PYTHONPATH=build/python /usr/bin/python3 examples/python/gradient_by_lag.py [OUT_DIR] [--steps N]

Writes OUT_DIR/gradient_by_lag.png (with matplotlib; else prints the table) and
OUT_DIR/model.safetensors, which `fbt forward`, `fbt grads` and fbt.load read.
"""
import argparse
import os

import numpy as np

import fbt

parser = argparse.ArgumentParser()
parser.add_argument("out_dir", nargs="?", default="gradient_by_lag")
parser.add_argument("--steps", type=int, default=400)
args = parser.parse_args()
os.makedirs(args.out_dir, exist_ok=True)

# %% The data: streams of random letters where the target at each position is the letter seen
# LAG steps earlier (a copy across time, which only the memory can do once the letter lies in an
# earlier call). 8 streams; each call of T tokens continues its stream.
LAG, B, T = 6, 8, 32
rng = np.random.default_rng(0)
streams = rng.integers(0, 26, (B, T * args.steps + LAG))


def batch(i):  # inputs (B, T) and their targets: the letter LAG positions back
    start = LAG + i * T
    return streams[:, start : start + T], streams[:, start - LAG : start - LAG + T]


# %% The model: the seed's keywords; the memory spans the lag.
model = fbt.FeedbackTransformer(num_tokens=26, dim=64, depth=2, heads=4, dim_head=16, mem_len=32, seed=1)
print(model)

# %% Training with the memory carried between steps (TBPTT), AdamW, warmup and cosine decay.
loop = fbt.TrainLoop(model, lr=2e-3, warmup=20, total_steps=args.steps, schedule="cosine", min_lr=2e-4)
for step in range(args.steps):
    stats = loop.step(*batch(step))
    if step % 50 == 0 or step == args.steps - 1:
        print(f"step {step:4d}  loss {stats['loss']:.3f}  lr {stats['lr']:.1e}")
model.save(os.path.join(args.out_dir, "model.safetensors"))

# %% Accuracy on a fresh stream, one call with no memory: positions LAG and later have a target.
fresh = np.random.default_rng(1).integers(0, 26, (1, 64))
predicted = model(fresh)[0].argmax(-1)
accuracy = np.mean(predicted[LAG:] == fresh[0, :-LAG])
print(f"copy accuracy on a fresh stream: {accuracy:.1%}")

# %% Gradient by lag: || d loss_last / d m_u || for the memory vectors of one call, by policy.
x, y = batch(0)
curves = {p: np.median(fbt.research.grad_by_lag(model, x, y, detach=p), axis=1) for p in ("none", "horizon:4")}
bias = fbt.research.truncation_bias(model, x, y, policies=["horizon:4", "all"])
for policy, groups in bias.items():
    print(f"truncation bias of {policy}: relative error {groups['all']['rel_error']:.3f}, "
          f"cosine {groups['all']['cosine']:.3f}")

lags = np.arange(1, T)
try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    print("lag  " + "  ".join(f"{p:>10}" for p in curves))
    for k in lags:
        print(f"{k:3d}  " + "  ".join(f"{curves[p][k - 1]:10.2e}" for p in curves))
else:
    fig, ax = plt.subplots(figsize=(6, 4))
    for policy, curve in curves.items():
        ax.semilogy(lags, np.maximum(curve, 1e-12), label=f"detach {policy}")
    ax.axvline(LAG, color="gray", linestyle=":", label="the copied letter")
    ax.set_xlabel("lag (steps back)")
    ax.set_ylabel("median ||d loss_last / d m||")
    ax.set_title(f"gradient through the memory (copy accuracy {accuracy:.0%})")
    ax.legend()
    fig.tight_layout()
    path = os.path.join(args.out_dir, "gradient_by_lag.png")
    fig.savefig(path, dpi=100)
    print(f"wrote {path}")
