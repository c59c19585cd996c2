#!/usr/bin/env python3
"""The table `./run algorithmic` prints: one line per run read from stdin as `NAME EVAL_JSON` (the
JSON line of `fbt eval`). Steps, tokens and wall time are the run's (the last line of
runs/algorithmic/NAME/metrics.jsonl) plus those of the earlier curriculum stages it was initialized
from (the `init_from` of each stage's config.yaml, followed back to a run that has none)."""
import json
import os
import re
import sys


def stages(run_dir):
    """The run and the runs it was initialized from, newest first."""
    while run_dir:
        yield run_dir
        with open(os.path.join(run_dir, "config.yaml")) as f:
            found = re.search(r"^  init_from: (.+)$", f.read(), re.M)
        run_dir = found and os.path.normpath(found.group(1).strip().strip('"'))
        while run_dir and not os.path.exists(os.path.join(run_dir, "config.yaml")):  # a checkpoint's folder
            run_dir = os.path.dirname(run_dir)


print(f"{'run':<22} {'stages':>6} {'parameters':>10} {'steps':>7} {'tokens':>12} {'wall time':>10} "
      f"{'test accuracy':>14} {'test loss':>10}")
for line in sys.stdin:
    name, evaluation = line.split(" ", 1)
    test = json.loads(evaluation)
    steps = tokens = elapsed = count = 0
    for run_dir in stages(f"runs/algorithmic/{name}"):
        with open(os.path.join(run_dir, "metrics.jsonl")) as f:
            last = json.loads(f.readlines()[-1])
        steps, tokens, count = steps + last["step"], tokens + last["tokens"], count + 1
        elapsed += last["elapsed_s"]
    print(f"{name:<22} {count:>6} {test['parameters']:>10} {steps:>7} {tokens:>12} {elapsed / 60:>6.1f} min "
          f"{test['accuracy']:>14.4f} {test['loss']:>10.4f}")
