"""What the recipe scripts (scripts/algorithmic.sh, scripts/lm_compare.sh) read from a run folder."""
import json
import os
import re


def records(run_dir):
    """The run's metrics.jsonl, one dict per line."""
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def config_value(config, key, default=None):
    """train.KEY of a config file (a recipe's or a run folder's config.yaml), as a float; default if absent."""
    with open(config) as f:
        found = re.search(rf"^  {key}: *([0-9.eE+-]+)", f.read(), re.M)
    if found is None and default is None:
        raise ValueError(f"{config}: no train.{key}")
    return float(found.group(1)) if found else default


def config_steps(config):
    """train.steps of a config file."""
    return int(config_value(config, "steps"))


def finished(run_dir, recipe):
    """The run trained the recipe's train.steps, or stopped where an evaluation reached its
    train.target_accuracy, and wrote its final weights."""
    if not (os.path.exists(os.path.join(run_dir, "model.safetensors"))
            and os.path.exists(os.path.join(run_dir, "metrics.jsonl"))):
        return False
    ran = os.path.join(run_dir, "config.yaml")
    if config_steps(ran) != config_steps(recipe) or config_value(ran, "target_accuracy", 0) != config_value(recipe, "target_accuracy", 0):
        return False
    last, target = records(run_dir)[-1], config_value(recipe, "target_accuracy", 0)
    return last["step"] == config_steps(recipe) or (
        target > 0 and last.get("split") == "valid" and last.get("accuracy", 0) >= target)


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
