#!/usr/bin/env bash
# Resume after SIGKILL: a run killed at arbitrary moments (mid-step, mid-checkpoint) and resumed
# each time must end bit-identical to an uninterrupted run.  Usage: resume_after_kill.sh FBT
fbt=$(realpath "$1")
source "$(dirname "$0")/lib.sh"
bytes_corpus "$fbt" 400
cat > run.yaml <<YAML
model: {num_tokens: 256, dim: 64, depth: 2, heads: 2, dim_head: 32, mem_len: 16, ff_dropout: 0.1}
data: {format: bytes, train: data/train.bin, valid: data/valid.bin}
train: {batch_size: 4, bptt: 16, steps: 400, checkpoint_every: 7, keep_last: 2, eval_every: 0,
        eval_tokens: 200, sample_tokens: 0, threads: 2, log_every: 10, out_dir: OUT}
YAML
"$fbt" train run.yaml --set train.out_dir=a >/dev/null
# Ctrl-C: the step in flight finishes, a checkpoint is written, the run says how to go on.
"$fbt" train run.yaml --set train.out_dir=b >int.log 2>&1 &
pid=$!
sleep 0.3
kill -INT "$pid" 2>/dev/null || true
wait "$pid" || { echo "interrupted run exited non-zero"; cat int.log; exit 1; }
if grep -q "interrupted" int.log; then
  ls b/checkpoints | grep -q '^step_' || { echo "no checkpoint after Ctrl-C"; exit 1; }
  grep -qF "(interrupted); continue with: $fbt train run.yaml --set train.out_dir=b --resume" int.log ||
    { cat int.log; echo "the message does not name the command that continues the run"; exit 1; }
fi
kills=0
for delay in 0.3 0.5 0.7 0.4 0.6; do
  "$fbt" train run.yaml --set train.out_dir=b --resume >/dev/null 2>&1 &
  pid=$!
  sleep "$delay"
  if kill -9 "$pid" 2>/dev/null; then kills=$((kills + 1)); fi
  wait "$pid" 2>/dev/null || true
done
"$fbt" train run.yaml --set train.out_dir=b --resume >/dev/null
if cmp -s a/model.safetensors b/model.safetensors; then
  echo "bit-identical after $kills kills"
else
  echo "final weights differ after $kills kills"; exit 1
fi
