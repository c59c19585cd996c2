#!/usr/bin/env bash
# The language-modelling comparison (docs/RESULTS.md, "Language modelling"), as ./run lm-compare
# calls it (after building fbt and preparing KJV):
#   scripts/lm_compare.sh [--out DIR] [--set KEY=VALUE ...]   both families (configs/lm/) at depths 1,
#       2 and 4, two runs side by side (a core each, the last on both; every run --resume's, so an interrupted
#       comparison goes on where it stopped), then each run on the test split: the table, and the
#       charts in DIR/charts. DIR defaults to runs/lm; --set data.* trains on another corpus (give
#       it its own --out).
#   scripts/lm_compare.sh --sweep [--out DIR] [--set ...]   the learning-rate sweep that chose each
#       family's train.lr: depth 2, the same rates for both, a quarter of the recipe's steps
#   scripts/lm_compare.sh --ship   copy the finished runs of runs/lm/ into results/lm/<run>/
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/cores.sh

FBT=${FBT:-build/fbt}  # the fbt that trains (a copy keeps long runs safe from rebuilds of build/)
SHIPPED=results/lm
DEPTHS=(1 2 4)
# Two queues, one per core, of about equal time (each run's wall time: docs/RESULTS.md).
QUEUES=("feedback-d4 transformer-xl-d1 transformer-xl-d2" "feedback-d1 feedback-d2 transformer-xl-d4")
SWEEP_LRS=(1e-3 2e-3 4e-3 8e-3)
SWEEP_DEPTH=2

usage() { echo "usage: ./run lm-compare [--sweep] [--out DIR] [--set KEY=VALUE ...] | --ship"; exit 2; }

train_run() {  # OUT RUN [fbt train flags]: RUN is FAMILY-dDEPTH, or lrRATE/FAMILY-dDEPTH for a sweep trial
  local run=$2 dir=$1/$2 name family depth trial=()
  shift 2
  name=$(basename "$dir") family=${name%-d*} depth=${name##*-d}
  case "$(basename "$(dirname "$dir")")" in  # a sweep trial: its rate, a quarter of the recipe's steps
    lr*) trial=(--set "train.lr=$(basename "$(dirname "$dir")" | cut -c3-)" --set "train.steps=$(sweep_steps)") ;;
  esac
  mkdir -p "$(dirname "$dir")"
  train_on_cores "$FBT" train "configs/lm/$family.yaml" --resume --set "model.depth=$depth" --set "train.out_dir=$dir" \
    "${trial[@]}" "$@" >>"$dir.log" 2>&1 ||
    { echo "$run: training failed (last lines of $dir.log):"; tail -n 3 "$dir.log"; return 1; }
  python3 scripts/lm_table.py --run "$dir" "$run"
}

sweep_steps() { (cd scripts && python3 -c "import runs; print(runs.config_steps('../configs/lm/feedback.yaml') // 4)"); }

queue() {  # OUT "RUN RUN ..." [fbt train flags]: the runs one after another
  local out=$1 run names
  read -r -a names <<<"$2"
  shift 2
  for run in "${names[@]}"; do train_run "$out" "$run" "$@" || return 1; done
}

side_by_side() {  # OUT QUEUE_A QUEUE_B [fbt train flags]: the two queues at once, a core each (scripts/cores.sh)
  local out=$1 a=$2 b=$3
  shift 3
  mkdir -p "$out"
  echo "two runs at a time, a core each (follow: tail -f $out/<run>.log)"
  local queue_a=(queue "$out" "$a" "$@") queue_b=(queue "$out" "$b" "$@")
  side_by_side_queues queue_a queue_b ||
    { echo "./run lm-compare: a run failed; run it again to go on from the last checkpoints"; exit 1; }
}

compare() {  # OUT [fbt train flags]: the six runs, their test evaluations, the table and the charts
  local out=$1 family depth dir rows=()
  shift
  side_by_side "$out" "${QUEUES[0]}" "${QUEUES[1]}" "$@"
  for family in feedback transformer-xl; do
    for depth in "${DEPTHS[@]}"; do
      dir=$out/$family-d$depth
      rows+=("$dir $("$FBT" eval "$dir/config.yaml" --checkpoint "$dir" --split test | tail -1)")
    done
  done
  printf '%s\n' "${rows[@]}" | python3 scripts/lm_table.py --charts "$out/charts"
}

# Each family at depth SWEEP_DEPTH with each rate of SWEEP_LRS for a quarter of the recipe's steps
# (the schedule's shape kept), one family a core; every trial's final valid bpc reads the whole split.
sweep() {  # OUT [fbt train flags]
  local out=$1/sweep lr a="" b=""
  shift
  for lr in "${SWEEP_LRS[@]}"; do
    a+=" lr$lr/feedback-d$SWEEP_DEPTH" b+=" lr$lr/transformer-xl-d$SWEEP_DEPTH"
  done
  side_by_side "$out" "$a" "$b" "$@"
  python3 scripts/lm_table.py --sweep "$out"
}

# The six runs of runs/lm/, each finished at its recipe's steps on KJV, into results/lm/<run>/ (config,
# weights, metrics), with the charts.
ship() {
  local family depth run dest
  for family in feedback transformer-xl; do
    for depth in "${DEPTHS[@]}"; do
      run=runs/lm/$family-d$depth
      python3 scripts/lm_table.py --finished "$run" "configs/lm/$family.yaml" &&
        grep -q "^  train: data/kjv/train.bin" "$run/config.yaml" ||
        { echo "./run lm-compare --ship: $run has not finished the KJV recipe (run ./run lm-compare)"; exit 1; }
    done
  done
  for family in feedback transformer-xl; do
    for depth in "${DEPTHS[@]}"; do
      run=runs/lm/$family-d$depth dest=$SHIPPED/$family-d$depth
      rm -rf "$dest" && mkdir -p "$dest"
      cp "$run/model.safetensors" "$run/metrics.jsonl" "$run/config.yaml" "$dest/"
      echo "shipped: $dest"
    done
  done
  cp runs/lm/charts/*.png "$SHIPPED/"
}

mode=compare out=runs/lm flags=()
[ "${1:-}" = "--ship" ] && { [ $# -eq 1 ] || usage; ship; exit; }
[ "${1:-}" = "--sweep" ] && { mode=sweep; shift; }
while [ $# -gt 0 ]; do
  case "$1" in
    --out) [ $# -ge 2 ] || usage; out=$2; shift 2 ;;
    --set) [ $# -ge 2 ] && [[ "$2" == *=* ]] || { echo "./run lm-compare: --set takes KEY=VALUE"; usage; }
      flags+=(--set "$2"); shift 2 ;;
    *) echo "./run lm-compare: unknown argument '$1'"; usage ;;
  esac
done
"$mode" "$out" "${flags[@]}"
