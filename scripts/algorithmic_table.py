#!/usr/bin/env python3
"""The table `./run algorithmic` prints. Reads lines `NAME STATEMENTS EVAL_JSON` from stdin (the JSON
line of `fbt eval` for run NAME on the test split of programs of STATEMENTS statements) and prints
one row per run: its steps, tokens and wall time (the last line of runs/algorithmic/NAME/metrics.jsonl)
plus those of the earlier curriculum stages it was initialized from (the `init_from` of each stage's
config.yaml, followed back to a run that has none), then its test accuracy at each program length.

  --stage RUN_DIR             one line on a stage: its steps, tokens, wall time and last valid accuracy
  --finished RUN_DIR CONFIG   exit 0 if the run finished CONFIG (its train.steps or train.target_accuracy) and wrote its final weights"""
import collections
import json
import os
import re
import sys

import runs


def stages(run_dir):
    """The run and the runs it was initialized from, newest first."""
    while run_dir:
        yield run_dir
        with open(os.path.join(run_dir, "config.yaml")) as f:
            found = re.search(r"^  init_from: (.+)$", f.read(), re.M)
        run_dir = found and os.path.normpath(found.group(1).strip().strip('"'))
        while run_dir and not os.path.exists(os.path.join(run_dir, "config.yaml")):  # a checkpoint's folder
            run_dir = os.path.dirname(run_dir)


if sys.argv[1:2] == ["--stage"]:
    print(runs.summary(sys.argv[2], "accuracy"))
    sys.exit(0)
if sys.argv[1:2] == ["--finished"]:
    sys.exit(0 if runs.finished(*sys.argv[2:4]) else 1)

tests = collections.defaultdict(dict)  # run -> statements -> eval JSON
for line in sys.stdin:
    name, statements, evaluation = line.split(" ", 2)
    tests[name][int(statements)] = json.loads(evaluation)
lengths = sorted({n for run in tests.values() for n in run})

print(f"{'run':<24} {'stages':>6} {'parameters':>10} {'steps':>7} {'tokens':>11} {'wall time':>10}"
      + "".join(f"{f'{n} statements':>15}" for n in lengths))
for name, by_length in tests.items():
    steps = tokens = elapsed = count = 0
    for run_dir in stages(f"runs/algorithmic/{name}"):
        last = runs.records(run_dir)[-1]
        steps, tokens, elapsed, count = steps + last["step"], tokens + last["tokens"], elapsed + last["elapsed_s"], count + 1
    parameters = next(iter(by_length.values()))["parameters"]
    print(f"{name:<24} {count:>6} {parameters:>10} {steps:>7} {tokens:>11} {elapsed / 60:>6.1f} min"
          + "".join(f"{by_length[n]['accuracy']:>15.1%}" if n in by_length else f"{'':>15}" for n in lengths))
