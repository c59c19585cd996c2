#!/usr/bin/python3
"""What adaptive span buys in speed (docs/PERFORMANCE.md, "Adaptive span"): a run's model with the
spans it learned against the same model without adaptive span (every head over the whole mem_len).

Both are fbt: `fbt bench` on the run's config, once with train.init_from=RUN (its learned spans;
the cost follows the widest, Model::span_reach) and once with model.adapt_span off, in alternating
rounds on the same threads, after warm-up steps that fill the memory; the ratio is taken between
the medians. Peak RSS and fbt's fraction of peak (FLOPs of the memory actually read) beside it.

Usage: /usr/bin/python3 bench/span.py RUN_DIR [--fbt BINARY] [--rounds N] [--steps N] [--threads N]
       (defaults: build/fbt, 3 rounds of 5 timed steps, 1 thread)
"""
import argparse, json, os, statistics, subprocess, sys, tempfile

import yaml


def bench(fbt, config, steps, sets):
    cmd = [fbt, "bench", "--config", config, "--steps", str(steps)] + [a for s in sets for a in ("--set", s)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description="adaptive span's speed: learned spans against the whole mem_len")
    ap.add_argument("run", help="a run directory (its config.yaml and newest weights)")
    ap.add_argument("--fbt", default="build/fbt")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    config = os.path.join(a.run, "config.yaml")
    if not os.path.isfile(config):
        sys.exit(f"bench/span.py: {config}: no such file (give a run directory of a model with model.adapt_span)")
    cfg = yaml.safe_load(open(config))
    if not cfg.get("model", {}).get("adapt_span"):
        sys.exit(f"bench/span.py: {config}: model.adapt_span is not on: there are no spans to compare")
    # the twin: the same model and batch, no adaptive span (the span keys would be errors without it)
    for k in ("adapt_span", "adapt_span_ramp", "adapt_span_init"):
        cfg["model"].pop(k, None)
    cfg["train"].pop("adapt_span_loss", None)
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump(cfg, f)
        fixed_config = f.name
    threads = f"train.threads={a.threads}"
    spans = subprocess.run([a.fbt, "spans", a.run], check=True, capture_output=True, text=True).stdout
    print(spans.rstrip(), flush=True)
    learned, fixed = [], []
    try:
        for r in range(a.rounds):
            learned.append(bench(a.fbt, config, a.steps, [threads, f"train.init_from={a.run}"]))
            fixed.append(bench(a.fbt, fixed_config, a.steps, [threads]))
            print(f"round {r + 1}: learned spans {learned[-1]['tokens_per_s']:.0f} tok/s "
                  f"({learned[-1]['peak_rss_mb']:.0f} MB), whole mem_len {fixed[-1]['tokens_per_s']:.0f} tok/s "
                  f"({fixed[-1]['peak_rss_mb']:.0f} MB)", flush=True)
    finally:
        os.unlink(fixed_config)
    s, w = (statistics.median(x["tokens_per_s"] for x in runs) for runs in (learned, fixed))
    s_rss, w_rss = (max(x["peak_rss_mb"] for x in runs) for runs in (learned, fixed))
    s_peak, w_peak = (statistics.median(x["fraction_of_peak"] for x in runs) for runs in (learned, fixed))
    print(f"{a.run}: learned spans {s:.0f} tok/s vs whole mem_len {w:.0f}: {s / w:.2f}x   "
          f"peak RSS {s_rss:.0f} MB vs {w_rss:.0f} MB: {s_rss / w_rss:.3f}x   "
          f"fbt at {100 * s_peak:.0f}% / {100 * w_peak:.0f}% of peak ({a.threads} thread{'s' if a.threads > 1 else ''})",
          flush=True)


if __name__ == "__main__":
    main()
