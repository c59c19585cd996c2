#!/usr/bin/env python3
"""The table `./run algorithmic` prints: one line per run read from stdin as `NAME EVAL_JSON` (the
JSON line of `fbt eval`), with the run's steps, tokens and wall time from the last line of
runs/algorithmic/NAME/metrics.jsonl."""
import json
import sys

print(f"{'run':<22} {'parameters':>10} {'steps':>7} {'tokens':>12} {'wall time':>10} {'test accuracy':>14} {'test loss':>10}")
for line in sys.stdin:
    name, evaluation = line.split(" ", 1)
    test = json.loads(evaluation)
    with open(f"runs/algorithmic/{name}/metrics.jsonl") as f:
        last = json.loads(f.readlines()[-1])
    wall = f"{last['elapsed_s'] / 60:.1f} min" if "elapsed_s" in last else "?"  # older runs lack it
    print(f"{name:<22} {test['parameters']:>10} {last['step']:>7} {last.get('tokens', '?'):>12} {wall:>10} "
          f"{test['accuracy']:>14.4f} {test['loss']:>10.4f}")
