#!/usr/bin/python3
"""Where a model of the code-execution task goes wrong: accuracy on printed values by how far back
the printed variable was assigned and how often it has changed since, and by whether an `if`'s
condition decided the printed value (where the rule that ignores conditions is wrong), beside the two
simple rules of docs/RESULTS.md (the value of the last assignment; every statement applied,
conditions ignored).

    PYTHONPATH=build/python /usr/bin/python3 scripts/algorithmic_breakdown.py RUN FILE.txt [--programs N]

RUN is a run's out_dir, a checkpoint directory or a model.safetensors (fbt.load); FILE.txt a split
written by `fbt prepare-algorithmic`; the ids are those of the run's data.vocab (--vocab, by default
the vocab.txt beside FILE.txt). The file is read as one stream in
chunks of --bptt tokens, the memory carried from chunk to chunk as in training.
"""
import argparse
import collections
import os
import sys

import numpy as np

import fbt


def trace(words):
    """Yields (position of a print's ';', true value, last-assignment rule, ignore-ifs rule,
    statements since v's assignment, changes of v since) for one program."""
    value, assigned, unconditional, since, changes = {}, {}, {}, {}, {}
    i = 0

    def simple(i, run):
        v, op = words[i], words[i + 1]
        if op == "=":
            k = int(words[i + 2])
            if run:
                value[v], assigned[v], since[v], changes[v] = k, k, 0, 0
            unconditional[v] = k  # the rule without conditions runs every statement
            return i + 4
        step = 1 if op == "++" else -1
        if run:
            value[v] += step
            changes[v] += 1
        unconditional[v] = min(10, max(1, unconditional[v] + step))
        return i + 3

    while words[i] != "END":
        for v in since:
            since[v] += 1
        if words[i] == "print":
            v = words[i + 1]
            yield i + 2, value[v], assigned[v], unconditional[v], since[v], changes[v]
            i += 3
        elif words[i] == "if":
            lhs, rhs = value[words[i + 1]], words[i + 3]
            rhs = value[rhs] if rhs in value else int(rhs)
            i = simple(i + 5, lhs < rhs if words[i + 2] == "<" else lhs > rhs)
        else:
            i = simple(i, True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run")
    ap.add_argument("file")
    ap.add_argument("--programs", type=int, default=1000, help="programs read from the file's start")
    ap.add_argument("--bptt", type=int, default=64, help="tokens per forward call")
    ap.add_argument("--vocab", help="the run's vocabulary (default: vocab.txt beside FILE.txt)")
    a = ap.parse_args()

    vocab = [w.strip() for w in open(a.vocab or os.path.join(os.path.dirname(a.file) or ".", "vocab.txt"))]
    ids = {w: k for k, w in enumerate(vocab)}
    tokens, prints = [], []  # prints: (stream position, value, rule 1, rule 2, since, changes)
    with open(a.file) as f:
        for line, _ in zip(f, range(a.programs)):
            words = line.split()
            prints += [(len(tokens) + p, *rest) for p, *rest in trace(words)]
            tokens += [ids[w] for w in words]

    model = fbt.load(a.run)
    x = np.array(tokens, dtype=np.int64)[None, :]
    predicted, memory = [], None
    for s in range(0, x.shape[1], a.bptt):
        logits, memory = model(x[:, s:s + a.bptt], memory=memory, return_memory=True)
        # as fbt eval: the argmax over every logit (ids past the vocabulary count as wrong)
        predicted += [vocab[k] if k < len(vocab) else None for k in logits[0].argmax(-1)]

    rows = collections.defaultdict(lambda: np.zeros(4))  # count, model, rule 1, rule 2 right
    for p, value, last_assignment, unconditional, since, changes in prints:
        key = (min(since, 6), min(changes, 3))
        conditions = "an if decided v" if unconditional != value else "no if decided v"
        for k in (key, conditions, "all"):
            rows[k] += (1, predicted[p] == str(value), last_assignment == value, unconditional == value)
    print(f"{'statements since v = k':>22} {'changes of v':>12} {'prints':>7} {'model':>7} "
          f"{'last v = k':>10} {'no ifs':>7}")
    for k in sorted(rows, key=lambda k: (isinstance(k, str), k == "all", str(k))):
        n, model_right, rule1, rule2 = rows[k]
        since, changes = (k, "") if isinstance(k, str) else (f"{k[0]}{'+' if k[0] == 6 else ''}",
                                                        f"{k[1]}{'+' if k[1] == 3 else ''}")
        print(f"{since:>22} {changes:>12} {int(n):>7} {model_right / n:>7.1%} {rule1 / n:>10.1%} {rule2 / n:>7.1%}")


if __name__ == "__main__":
    sys.exit(main())
