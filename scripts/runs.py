"""What the recipe scripts (scripts/algorithmic.sh, scripts/lm_compare.sh) read from a run folder."""
import json
import os
import re


def records(run_dir):
    """The run's metrics.jsonl, one dict per line."""
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def config_steps(config):
    """train.steps of a config file (a recipe's or a run folder's config.yaml)."""
    with open(config) as f:
        return int(re.search(r"^  steps: *(\d+)", f.read(), re.M).group(1))


def finished(run_dir, recipe):
    """The run trained the recipe's train.steps and wrote its final weights."""
    return (os.path.exists(os.path.join(run_dir, "model.safetensors"))
            and os.path.exists(os.path.join(run_dir, "metrics.jsonl"))
            and config_steps(os.path.join(run_dir, "config.yaml")) == config_steps(recipe) == records(run_dir)[-1]["step"])


def summary(run_dir, metric, label=None):
    """One progress line, LABEL (default: the run folder's name): steps, tokens, wall time and the last
    valid METRIC ("accuracy" or "bpc")."""
    run = records(run_dir)
    last = run[-1]
    valid = [r for r in run if r.get("split") == "valid"]
    shown = (f", valid {metric} " + (f"{valid[-1][metric]:.1%}" if metric == "accuracy" else f"{valid[-1][metric]:.4f}")
             + f" at step {valid[-1]['step']}") if valid else ""
    return (f"{label or os.path.basename(os.path.normpath(run_dir))}: {last['step']} steps, {last['tokens'] / 1e6:.1f} M tokens,"
            f" {last['elapsed_s'] / 60:.1f} min{shown}")
