#!/usr/bin/env bash
# The most that splitting a batch's streams between the cores could give (docs/PERFORMANCE.md,
# "Threads over streams"): per config, one `fbt bench` process with 2 threads on the whole batch,
# then two 1-thread processes at once with half the batch each, their tokens/s added; alternating
# rounds. Usage: bench/split_streams.sh [CONFIG_NAME ...]   (default: code_feedback kjv exact)
set -euo pipefail
cd "$(dirname "$0")/.."
FBT=${FBT:-build/fbt}
ROUNDS=${ROUNDS:-3}
tokens_per_s() { python3 -c "import json, sys; print(round(sum(json.load(open(f))['tokens_per_s'] for f in sys.argv[1:])))" "$@"; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
configs=("$@")
[ $# -gt 0 ] || configs=(code_feedback kjv exact)
for cfg in "${configs[@]}"; do
  batch=$(python3 -c "import yaml, sys; print(yaml.safe_load(open(sys.argv[1]))['train']['batch_size'])" "bench/$cfg.yaml")
  for round in $(seq "$ROUNDS"); do
    "$FBT" bench --config "bench/$cfg.yaml" --steps 10 --set train.threads=2 >"$out/one.json"
    "$FBT" bench --config "bench/$cfg.yaml" --steps 10 --set train.threads=1 --set "train.batch_size=$((batch / 2))" >"$out/a.json" &
    "$FBT" bench --config "bench/$cfg.yaml" --steps 10 --set train.threads=1 --set "train.batch_size=$((batch / 2))" >"$out/b.json"
    wait
    echo "$cfg round $round: 1 process x 2 threads, batch $batch: $(tokens_per_s "$out/one.json") tok/s;" \
      "2 processes x 1 thread, batch $((batch / 2)) each: $(tokens_per_s "$out/a.json" "$out/b.json") tok/s"
  done
done
