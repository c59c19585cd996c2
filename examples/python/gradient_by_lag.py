"""A notebook-style tour of fbt from Python: train a small Feedback Transformer on a task with a
long-range dependency, then measure how far back its gradient reaches through the memory, with
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
parser.add_argument("--steps", type=int, default=300)
args = parser.parse_args()
os.makedirs(args.out_dir, exist_ok=True)

# %% The data: lines of "k:" + filler + "=k", where the key letter k must be recalled 8
# characters later. Bytes are the tokens; 8 streams read their own part of the text.
rng = np.random.default_rng(0)
keys = rng.integers(ord("a"), ord("z") + 1, 4000)
filler = "." * 6
text = "".join(f"{chr(k)}:{filler}={chr(k)}\n" for k in keys).encode()
data = np.frombuffer(text, dtype=np.uint8).astype(np.int64)
B, T = 8, 32
stream = len(data) // B
streams = data[: B * stream].reshape(B, stream)

# %% The model: the seed's keywords; the memory spans the dependency.
model = fbt.FeedbackTransformer(num_tokens=256, dim=64, depth=2, heads=4, dim_head=16, mem_len=32, seed=1)
print(model)

# %% Training with the memory carried between steps (TBPTT), AdamW, warmup and cosine decay.
loop = fbt.TrainLoop(model, lr=1e-3, warmup=20, total_steps=args.steps, schedule="cosine", min_lr=3e-4)
for step in range(args.steps):
    pos = (step * T) % (stream - T - 1)
    if pos < T:
        loop.reset_memory()  # a new pass over the streams
    x, y = streams[:, pos : pos + T], streams[:, pos + 1 : pos + T + 1]
    stats = loop.step(x, y)
    if step % 50 == 0 or step == args.steps - 1:
        print(f"step {step:4d}  loss {stats['loss']:.3f}  lr {stats['lr']:.1e}")
model.save(os.path.join(args.out_dir, "model.safetensors"))

# %% Accuracy on the recalled letter (the character after each '='), on fresh lines.
keys = rng.integers(ord("a"), ord("z") + 1, 64)
probe = np.frombuffer("".join(f"{chr(k)}:{filler}={chr(k)}\n" for k in keys).encode(), dtype=np.uint8)
logits = model(probe[None, :-1].astype(np.int64))[0]
after_eq = np.flatnonzero(probe[:-1] == ord("="))
accuracy = np.mean(logits[after_eq].argmax(-1) == probe[after_eq + 1])
print(f"recall accuracy on fresh lines: {accuracy:.1%}")

# %% Gradient by lag: || d loss_last / d m_u || for the memory vectors of one call, by policy.
x, y = streams[:, :T], streams[:, 1 : T + 1]
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
    ax.axvline(8, color="gray", linestyle=":", label="the recalled key")
    ax.set_xlabel("lag (steps back)")
    ax.set_ylabel("median ||d loss_last / d m||")
    ax.set_title(f"gradient through the memory (recall {accuracy:.0%})")
    ax.legend()
    fig.tight_layout()
    path = os.path.join(args.out_dir, "gradient_by_lag.png")
    fig.savefig(path, dpi=100)
    print(f"wrote {path}")
