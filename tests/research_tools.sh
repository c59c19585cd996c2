#!/usr/bin/env bash
# fbt grads and fbt plot end to end on a real (tiny) training run: probes in metrics.jsonl, a grads
# JSONL from a checkpoint, and PNG charts of both.  Usage: research_tools.sh FBT
fbt=$(realpath "$1")
source "$(dirname "$0")/lib.sh"
if ! command -v gnuplot >/dev/null; then echo "gnuplot not installed (./run installs gnuplot-nox)"; exit 77; fi
bytes_corpus "$fbt" 300
cat > run.yaml <<YAML
model: {num_tokens: 256, dim: 32, depth: 2, heads: 2, dim_head: 16, mem_len: 16}
data: {format: bytes, train: data/train.bin, valid: data/valid.bin}
train: {batch_size: 4, bptt: 16, steps: 40, eval_every: 20, probe_every: 10, log_every: 10,
        checkpoint_every: 20, sample_tokens: 0, threads: 1, out_dir: run}
YAML
"$fbt" train run.yaml >/dev/null
probes=$(grep -c '"split":"probe"' run/metrics.jsonl)
[ "$probes" -eq 4 ] || { echo "expected 4 probe lines, got $probes"; exit 1; }
"$fbt" grads --config run.yaml --checkpoint run --split valid --batches 2 --policies none,horizon:4,every:8,all \
  --probes 4 --out run/grads.jsonl >/dev/null
for kind in lag bias jacobian; do
  grep -q "\"kind\":\"$kind\"" run/grads.jsonl || { echo "no $kind rows"; exit 1; }
done
[ "$(grep -c '"kind":"lag"' run/grads.jsonl)" -eq 15 ] || { echo "expected 15 lags"; exit 1; }
"$fbt" plot run
for png in loss bpc grad_by_lag jacobian layer_mix truncation_bias; do
  head -c 8 "run/$png.png" | od -An -tx1 | grep -q "89 50 4e 47" || { echo "run/$png.png is not a PNG"; exit 1; }
done
if "$fbt" grads --config run.yaml --checkpoint run --detach every:5x --out x.jsonl 2>err.txt; then exit 1; fi
grep -q "unknown detach policy\|not an integer" err.txt
echo "grads and plots OK"
