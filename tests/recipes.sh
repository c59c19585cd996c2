#!/usr/bin/env bash
# scripts/cores.sh's widening of a run; ./run lm-compare's script end to end on a tiny corpus (its
# --out and --set data.* keep it out of the source tree's runs/): the six runs, their test
# evaluations, the table and the charts; the learning-rate sweep and its verdict; a second call
# resumes instead of training again; bad arguments are refused with the usage, as ./run
# algorithmic's are.  Usage: recipes.sh FBT SOURCE_DIR
fbt=$(realpath "$1") src=$(realpath "$2")
source "$(dirname "$0")/lib.sh"
bytes_corpus "$fbt" 300
tiny=(--set model.dim=16 --set model.dim_head=8 --set model.heads=2 --set model.mem_len=8 --set train.bptt=8
      --set train.batch_size=2 --set train.steps=4 --set train.warmup=1 --set train.eval_every=2
      --set train.eval_tokens=64 --set train.log_every=2 --set train.checkpoint_every=2
      --set "data.train=$scratch/data/train.bin" --set "data.valid=$scratch/data/valid.bin"
      --set "data.test=$scratch/data/test.bin")
lm() { FBT=$fbt "$src/scripts/lm_compare.sh" "$@"; }

# scripts/cores.sh: a run widened halfway (stopped, resumed at once on every core) ends with the
# weights of the same run left alone.
source "$src/scripts/cores.sh"
long=("$fbt" train "$src/configs/lm/feedback.yaml" "${tiny[@]}" --set train.steps=2000 --set train.eval_every=0
      --set train.log_every=10 --set train.sample_tokens=0)
"${long[@]}" --set train.out_dir="$scratch/alone" >alone.log 2>&1 || { cat alone.log; fail "the run left alone"; }
(widen_on_usr1; train_on_cores "${long[@]}" --resume --set train.out_dir="$scratch/widened") >widened.log 2>&1 &
queue=$!
until grep -q '"step":100,' widened/metrics.jsonl 2>/dev/null || ! kill -0 "$queue" 2>/dev/null; do sleep 0.05; done
kill -USR1 "$queue" 2>/dev/null || true
wait "$queue" || { cat widened.log; fail "the widened run"; }
grep -q "stopped at step" widened.log && grep -q "resuming from" widened.log || { cat widened.log; fail "the run was not widened halfway"; }
"$fbt" compare alone/model.safetensors widened/model.safetensors >compare-widened.txt ||
  { cat compare-widened.txt; fail "the widened run's weights differ from the run left alone"; }
echo "cores: a run widened halfway ends bit for bit as the run left alone"

lm --out "$scratch/lm" "${tiny[@]}" >compare.txt 2>&1 || { cat compare.txt; fail "lm_compare.sh"; }
for run in feedback-d1 feedback-d2 feedback-d4 transformer-xl-d1 transformer-xl-d2 transformer-xl-d4; do
  grep -q "^$run: 4 steps" compare.txt || { cat compare.txt; fail "no progress line for $run"; }
  grep -Eq "^$run +[0-9]+ +4 +64 .* [0-9]+\.[0-9]{4} +[0-9]+\.[0-9]{4}$" compare.txt || { cat compare.txt; fail "no table row for $run"; }
  [ -f "lm/$run/model.safetensors" ] || fail "$run wrote no final weights"
done
grep -q "^  depth: 4" lm/feedback-d4/config.yaml || fail "feedback-d4 did not train at depth 4"
if command -v gnuplot >/dev/null; then
  [ -s lm/charts/test_bpc_by_depth.png ] && [ -s lm/charts/valid_bpc_by_time.png ] || fail "charts missing"
fi
cp lm/feedback-d1/model.safetensors d1.safetensors
lm --out "$scratch/lm" "${tiny[@]}" >again.txt 2>&1 || { cat again.txt; fail "the second call"; }
cmp -s d1.safetensors lm/feedback-d1/model.safetensors || fail "the second call changed a finished run"
echo "compare: six runs, table, charts; a second call resumes"

lm --sweep --out "$scratch/lm" "${tiny[@]}" >sweep.txt 2>&1 || { cat sweep.txt; fail "the sweep"; }
[ "$(grep -c '^feedback-d2 lr ' sweep.txt)" -eq 4 ] && [ "$(grep -c '^transformer-xl-d2 lr ' sweep.txt)" -eq 4 ] ||
  { cat sweep.txt; fail "the sweep did not report four trials per family"; }
grep -q "^best for feedback-d2: lr " sweep.txt && grep -q "^best for transformer-xl-d2: lr " sweep.txt ||
  { cat sweep.txt; fail "the sweep names no best rate"; }
echo "sweep: four trials per family and each family's best"

for bad in "--bogus" "--out" "--ship extra" "--set"; do
  set +e
  # shellcheck disable=SC2086
  lm $bad >bad.txt 2>&1
  rc=$?
  set -e
  [ "$rc" -eq 2 ] && grep -q "usage: ./run lm-compare" bad.txt || { cat bad.txt; fail "'$bad': exit $rc, expected 2 with the usage"; }
done
echo "bad arguments: refused with the usage"

# ./run algorithmic's script refuses bad arguments before any work (its training: docs/RESULTS.md).
for bad in "--bogus" "--set" "--set train.lr" "--check extra" "--ship extra" "--variables" "--variables 4" \
  "--ship --variables 2" "--ship --variables" "--check --variables 5"; do
  set +e
  # shellcheck disable=SC2086
  FBT=$fbt "$src/scripts/algorithmic.sh" $bad >bad.txt 2>&1
  rc=$?
  set -e
  [ "$rc" -eq 2 ] && grep -q "usage: ./run algorithmic" bad.txt || { cat bad.txt; fail "algorithmic '$bad': exit $rc, expected 2 with the usage"; }
done
echo "algorithmic: bad arguments refused with the usage"
