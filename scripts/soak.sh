#!/usr/bin/env bash
# The soak test (docs/RELIABILITY.md): a small model trains while this driver stops it at random
# moments (SIGKILL, SIGTERM, SIGINT) and resumes it, until the run completes; then it checks that
# the weights equal an uninterrupted run's bit for bit, that no lock is held and no temporary
# file or folder is left, and that metrics.jsonl holds each step's lines once, whole. Then again,
# in a fresh out_dir, until SECONDS have passed.
# Usage: soak.sh FBT SECONDS [WORK_DIR] [SEED]   (./run soak MINUTES calls it)
set -euo pipefail
fbt=$(realpath "$1")
budget=${2:?usage: soak.sh FBT SECONDS [WORK_DIR] [SEED]}
[[ "$budget" =~ ^[0-9]+$ && "$budget" -gt 0 ]] || { echo "soak: SECONDS must be a positive whole number, not '$budget'"; exit 2; }
work=${3:-}
seed=${4:-$(( $(date +%s) % 32768 ))}
RANDOM=$seed
if [ -z "$work" ]; then
  work=$(mktemp -d)
  trap 'kill -9 $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
else
  mkdir -p "$work"
  trap 'kill -9 $(jobs -p) 2>/dev/null || true' EXIT
fi
cd "$work"
fail() { echo "soak: FAIL (seed $seed, cycle $cycle): $*"; exit 1; }

for i in $(seq 600); do echo "In the beginning God created the heaven and the earth. $i"; done > text.txt
[ -f data/train.bin ] || "$fbt" prepare-bytes text.txt data >/dev/null
# Checkpoints every 3 steps, kept 2; an eval every 10 (its lines too must appear once); dropout on,
# so a resume must restore the dropout stream as well as the weights and the data cursor.
cat > soak.yaml <<YAML
model: {num_tokens: 256, dim: 64, depth: 2, heads: 2, dim_head: 32, mem_len: 16, ff_dropout: 0.1}
data: {format: bytes, train: data/train.bin, valid: data/valid.bin}
train: {batch_size: 4, bptt: 16, steps: 240, checkpoint_every: 3, keep_last: 2, eval_every: 10,
        eval_tokens: 256, sample_tokens: 0, threads: 1, log_every: 1, out_dir: OUT}
YAML
rm -rf reference
"$fbt" train soak.yaml --set train.out_dir=reference >/dev/null 2>&1 || fail "the uninterrupted run failed"

# The run in $1 is whole: the reference's weights, no lock held, nothing temporary left, each
# step's train line (and each eval's valid line) once, every line JSON.
check_run() {
  local out=$1
  cmp -s "$out/model.safetensors" reference/model.safetensors || fail "$out: weights differ from the uninterrupted run's"
  flock -n "$out/.fbt-lock" true || fail "$out: the lock is still held"
  local left
  left=$(find "$out" -name '*.tmp' -o -name '*.tmp.*' | head -5)
  [ -z "$left" ] || fail "$out: temporary files left: $left"
  python3 - "$out/metrics.jsonl" reference/metrics.jsonl <<'PY' || fail "$out: metrics.jsonl is not the uninterrupted run's lines, once each"
import json, sys
def steps(path):
    seen = []
    for n, line in enumerate(open(path), 1):
        j = json.loads(line)  # a cut line fails here
        if j.get("split") in ("train", "valid"):
            seen.append((j["split"], j["step"]))
    return seen
got, want = steps(sys.argv[1]), steps(sys.argv[2])
if sorted(got) != sorted(want) or len(set(got)) != len(got):
    dup = sorted({s for s in got if got.count(s) > 1})[:5]
    miss = sorted(set(want) - set(got))[:5]
    sys.exit(f"{len(got)} lines, {len(want)} wanted; repeated {dup}, missing {miss}")
PY
}

start=$SECONDS
cycle=0 runs=0 kills=0 terms=0 ints=0
signals=(KILL TERM INT)
while [ $((SECONDS - start)) -lt "$budget" ]; do
  out="run$runs"
  rm -rf "$out"
  flag=""
  while :; do  # one run, stopped and resumed until it ends by itself
    "$fbt" train soak.yaml --set train.out_dir="$out" $flag >"$out.log" 2>&1 &
    pid=$!
    flag="--resume"
    # A moment anywhere from start-up to a checkpoint's fsync: 0 to 1 s (a whole run takes ~2 s).
    sleep "0.$(printf '%03d' $((RANDOM % 1000)))"
    sig=${signals[$((RANDOM % 3))]}
    if kill -s "$sig" "$pid" 2>/dev/null; then
      cycle=$((cycle + 1))
      case $sig in KILL) kills=$((kills + 1)) ;; TERM) terms=$((terms + 1)) ;; INT) ints=$((ints + 1)) ;; esac
    fi
    rc=0
    { wait "$pid"; } 2>/dev/null || rc=$?  # (bash's "Killed" notice, not fbt's, goes nowhere)
    # Ended by itself (the signal came too late), or stopped: either way the run must be resumable.
    if [ "$rc" -ne 0 ] && [ "$rc" -ne 137 ] && ! grep -q "interrupted" "$out.log"; then
      [ "$rc" -eq 143 ] || [ "$rc" -eq 130 ] || { tail -5 "$out.log"; fail "$out: exit status $rc"; }
    fi
    if [ -f "$out/model.safetensors" ] && ! grep -q "interrupted" "$out.log" && [ "$rc" -eq 0 ]; then break; fi
    [ $((SECONDS - start)) -lt $((budget * 3)) ] || fail "$out: not finished after $((SECONDS - start)) s"
  done
  check_run "$out"
  runs=$((runs + 1))
  rm -rf "$out" "$out.log"
done
echo "soak: $runs runs, $cycle stops ($kills SIGKILL, $terms SIGTERM, $ints SIGINT) survived in $((SECONDS - start)) s:" \
  "every run ended with the uninterrupted run's weights, no lock held, nothing temporary left, each metrics line once (seed $seed)"
