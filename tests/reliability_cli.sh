#!/usr/bin/env bash
# The reliability promises through the binary (docs/RELIABILITY.md): a second run on a busy out_dir
# is refused at once, a killed run leaves no lock, a write past a size limit is one line and a
# non-zero exit with nothing half-written, and so is a full disk, a damaged checkpoint is refused
# by name.
# Usage: reliability_cli.sh FBT
fbt=$(realpath "$1")
source "$(dirname "$0")/lib.sh"
bytes_corpus "$fbt" 400
cat > run.yaml <<YAML
model: {num_tokens: 256, dim: 64, depth: 2, heads: 2, dim_head: 32, mem_len: 16}
data: {format: bytes, train: data/train.bin, valid: data/valid.bin}
train: {batch_size: 4, bptt: 16, steps: 100000, checkpoint_every: 5, keep_last: 2, eval_every: 0,
        eval_tokens: 200, sample_tokens: 0, threads: 1, log_every: 10, out_dir: run}
YAML

# 1. One run per out_dir: a second one, plain or --resume, fails at once naming the holder.
"$fbt" train run.yaml >first.log 2>&1 &
first=$!
for _ in $(seq 100); do grep -q "^step" first.log && break; sleep 0.1; done
for flag in "" "--resume"; do
  if "$fbt" train run.yaml $flag >second.log 2>&1; then fail "a second run ($flag) on a busy out_dir was not refused"; fi
  grep -q "train.out_dir run is in use by another run (pid $first on " second.log || { cat second.log; fail "no holder named"; }
done
# 2. A run killed with SIGKILL leaves no lock: --resume goes on at once.
kill -9 "$first"
wait "$first" 2>/dev/null || true
"$fbt" train run.yaml --resume --set train.steps=12 >resume.log 2>&1 || { cat resume.log; fail "resume after SIGKILL"; }

# 3. A damaged checkpoint: eval refuses it by name, --resume skips it for the one before.
newest=$(ls -d run/checkpoints/step_* | tail -1)
printf '\x55' | dd of="$newest/model.safetensors" bs=1 seek=$(( $(stat -c %s "$newest/model.safetensors") - 100 )) \
  conv=notrunc 2>/dev/null
if "$fbt" eval run.yaml --checkpoint "$newest" >eval.log 2>&1; then fail "eval used a damaged checkpoint"; fi
grep -q "$newest/model.safetensors: checksum mismatch" eval.log || { cat eval.log; fail "damage not named"; }
"$fbt" train run.yaml --resume --set train.steps=14 >skip.log 2>&1 || { cat skip.log; fail "resume past a damaged checkpoint"; }
grep -q "skipping checkpoint $newest: .*checksum mismatch" skip.log || { cat skip.log; fail "the skip is not said"; }

# 4. A file-size limit (ulimit -f, in 1 KiB blocks): the first checkpoint's 64 KiB of embeddings
#    do not fit. One line on stderr, exit 1 (not a signal's 153), no partial checkpoint left.
set +e
(ulimit -f 32; exec "$fbt" train run.yaml --set train.out_dir=small --set train.steps=6) >small.out 2>small.err
rc=$?
set -e
[ "$rc" -eq 1 ] || { cat small.err; fail "exit status $rc under ulimit -f, expected 1"; }
[ "$(wc -l <small.err)" -eq 1 ] || { cat small.err; fail "expected one line on stderr"; }
grep -q "checkpoint of step 5 not saved (no earlier checkpoint): .*model.safetensors: write failed: File too large" \
  small.err || { cat small.err; fail "the write failure is not named"; }
[ -z "$(ls small/checkpoints)" ] || { ls small/checkpoints; fail "a partial checkpoint was left"; }

# 5. A full disk: out_dir on a small tmpfs (in a private mount namespace; skipped where this user
#    may not make one) with room for two and a half checkpoints. keep_last 2 needs a third while
#    it writes one, so step 15's does not fit: one line naming the file and "No space left on
#    device", exit 1, steps 5 and 10 intact, nothing half-written. With room again, --resume ends
#    with the weights of a run that never stopped.
if unshare -m true 2>/dev/null; then
  "$fbt" train run.yaml --set train.out_dir=ref --set train.steps=20 >/dev/null 2>&1
  one=$(du -sb ref/checkpoints/step_00000020 | cut -f1)
  mkdir -p full
  cat > full.sh <<SH
set -euo pipefail
fail() { echo "FAIL: \$*"; exit 1; }
mount -t tmpfs -o size=$((one * 5 / 2)) tmpfs full
set +e
"$fbt" train run.yaml --set train.out_dir=full/run --set train.steps=20 >full.out 2>full.err
rc=\$?
set -e
[ "\$rc" -eq 1 ] || { cat full.err; fail "exit status \$rc on a full disk, expected 1"; }
[ "\$(wc -l <full.err)" -eq 1 ] || { cat full.err; fail "expected one line on stderr"; }
grep -q "checkpoint of step 15 not saved (earlier ones are intact): .*: No space left on device" full.err ||
  { cat full.err; fail "the full disk is not named"; }
[ "\$(ls full/run/checkpoints | tr '\n' ' ')" = "step_00000005 step_00000010 " ] ||
  { ls full/run/checkpoints; fail "expected steps 5 and 10 intact, nothing else"; }
mount -o remount,size=$((one * 8)) full
"$fbt" train run.yaml --set train.out_dir=full/run --set train.steps=20 --resume >resume.out 2>&1 ||
  { cat resume.out; fail "resume once there is room"; }
cp full/run/model.safetensors full-model.safetensors
SH
  unshare -m bash full.sh
  cmp -s full-model.safetensors ref/model.safetensors || fail "the run resumed after a full disk ends with other weights"
  echo "full disk: one line, checkpoints 5 and 10 intact, resumed to the same weights"
else
  echo "full disk: skipped (no private mount namespace for a small tmpfs here)"
fi
echo "ok"
