#!/usr/bin/env python3
"""The table and charts `./run lm-compare` prints and draws. Reads lines `RUN_DIR EVAL_JSON` from stdin
(the JSON line of `fbt eval --split test` for the run in RUN_DIR, named FAMILY-dDEPTH) and prints one
row per run: parameters, steps, tokens, wall time and tokens/s (the last line of its metrics.jsonl),
its last valid bpc and its test bpc. With --charts DIR it also draws, with gnuplot, DIR/test_bpc_by_depth.png
(a line per family) and DIR/valid_bpc_by_time.png (a line per run: the cost view).

  --run RUN_DIR [LABEL]       one progress line on a run: its steps, tokens, wall time and last valid bpc
  --finished RUN_DIR CONFIG   exit 0 if the run finished CONFIG (its train.steps or train.target_accuracy) and wrote its final weights
  --sweep DIR                 the learning-rate trials in DIR/lr*/ (./run lm-compare --sweep): each one's final
                              valid bpc, and each family's best"""
import collections
import glob
import json
import math
import os
import subprocess
import sys

import runs

if sys.argv[1:2] == ["--run"]:
    print(runs.summary(sys.argv[2], "bpc", sys.argv[3] if len(sys.argv) > 3 else None))
    sys.exit(0)
if sys.argv[1:2] == ["--finished"]:
    sys.exit(0 if runs.finished(*sys.argv[2:4]) else 1)
if sys.argv[1:2] == ["--sweep"]:
    best = {}
    print(f"{'trial':<32} {'valid bpc':>9}")
    for trial in sorted(glob.glob(os.path.join(sys.argv[2], "lr*", "*-d*", "metrics.jsonl"))):
        run_dir = os.path.dirname(trial)
        valid = [r for r in runs.records(run_dir) if r.get("split") == "valid"]
        if not valid:
            continue
        lr, family = os.path.basename(os.path.dirname(run_dir))[2:], os.path.basename(run_dir)
        print(f"{family + ' lr ' + lr:<32} {valid[-1]['bpc']:>9.4f}")
        if family not in best or valid[-1]["bpc"] < best[family][1]:
            best[family] = (lr, valid[-1]["bpc"])
    for family, (lr, bpc) in sorted(best.items()):
        print(f"best for {family}: lr {lr} ({bpc:.4f} valid bpc)")
    sys.exit(0)
charts = sys.argv[2] if sys.argv[1:2] == ["--charts"] else None

rows = []
for line in sys.stdin:
    run_dir, evaluation = line.split(" ", 1)
    name = os.path.basename(os.path.normpath(run_dir))
    family, depth = name.rsplit("-d", 1)
    metrics = runs.records(run_dir)
    valid = [r for r in metrics if r.get("split") == "valid"]
    test = json.loads(evaluation)
    test["bpc"] = test["loss"] / math.log(2)  # bits per token, as metrics.jsonl's bpc (per byte on a byte corpus)
    rows.append(dict(name=name, family=family, depth=int(depth), test=test, last=metrics[-1], valid=valid))
rows.sort(key=lambda r: (r["family"], r["depth"]))

print(f"{'run':<20} {'parameters':>10} {'steps':>7} {'tokens':>11} {'wall time':>10} {'tokens/s':>9} {'valid bpc':>9} {'test bpc':>9}")
for r in rows:
    last = r["last"]
    print(f"{r['name']:<20} {r['test']['parameters']:>10} {last['step']:>7} {last['tokens']:>11}"
          f" {last['elapsed_s'] / 60:>6.1f} min {last['tokens'] / last['elapsed_s']:>9.0f}"
          f" {r['valid'][-1]['bpc'] if r['valid'] else float('nan'):>9.4f} {r['test']['bpc']:>9.4f}")

if charts:
    os.makedirs(charts, exist_ok=True)
    by_family = collections.defaultdict(list)
    for r in rows:
        by_family[r["family"]].append(r)
    # gnuplot index blocks (two blank lines apart), one per family or run; titles are the runs' own names.
    with open(os.path.join(charts, "test_bpc_by_depth.dat"), "w") as f:
        for family, rs in by_family.items():
            f.write(f"# {family}\n" + "".join(f"{r['depth']} {r['test']['bpc']}\n" for r in rs) + "\n\n")
    with open(os.path.join(charts, "valid_bpc_by_time.dat"), "w") as f:
        for r in rows:
            f.write(f"# {r['name']}\n" + "".join(f"{v['elapsed_s'] / 60} {v['bpc']}\n" for v in r["valid"]) + "\n\n")

    def plot(dat, titles):
        return "plot " + ", ".join(f"'{dat}' index {i} with linespoints pt 7 ps 0.6 title '{t}'" for i, t in enumerate(titles)) + "\n"

    script = ("set terminal pngcairo size 900,560 noenhanced\nset grid\nset key outside right\n"
              "set output 'test_bpc_by_depth.png'\nset title 'test bpc by depth (lower is better)'\n"
              "set xlabel 'layers'\nset ylabel 'test bpc'\nset logscale x 2\nset xtics (1, 2, 4)\n"
              + plot("test_bpc_by_depth.dat", by_family)
              + "unset logscale\nset xtics autofreq\nset output 'valid_bpc_by_time.png'\n"
              "set title 'valid bpc by wall-clock time (one core a run)'\nset xlabel 'minutes'\nset ylabel 'valid bpc'\n"
              + plot("valid_bpc_by_time.dat", [r["name"] for r in rows]))
    with open(os.path.join(charts, "lm.gp"), "w") as f:
        f.write(script)
    subprocess.run(["gnuplot", "./lm.gp"], cwd=charts, check=True)  # no shell; titles are run folder names
    print(f"charts: {charts}/test_bpc_by_depth.png {charts}/valid_bpc_by_time.png")
