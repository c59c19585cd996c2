#!/usr/bin/env bash
# The code-execution recipe (docs/RESULTS.md), as ./run algorithmic calls it (after building fbt):
#   scripts/algorithmic.sh [--set KEY=VALUE ...]   prepare the curriculum's data, train both families'
#       stages (the two chains side by side, a core each, the one left on both: scripts/cores.sh;
#       every stage --resume's, so an interrupted recipe goes on where it stopped), then test each
#       family's last stage on programs of 10, 30 and 100 statements and print the table
#   scripts/algorithmic.sh --variables 5 [--set ...]   the same for five variables: two more stages
#       from each family's three-variable chain (its run in runs/algorithmic/, else the shipped one),
#       tested on five-variable programs of 30 and 100 statements
#   scripts/algorithmic.sh --check   each family's first stage trained again from scratch and compared
#       bit for bit with the shipped one: the chain's first link, ~15 minutes
#   scripts/algorithmic.sh --ship [--variables 5]   copy the finished stages of runs/algorithmic/ into
#       results/algorithmic/
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/cores.sh

FAMILIES=(feedback transformer-xl)
STAGES=(1var 3var 3var-s30 3var-s100)  # each starts from the previous one's weights (train.init_from)
# each stage's data: VARIABLES STATEMENTS PROGRAMS DIR (the last's valid and test splits: the official task's size and rules)
DATA=("1 10 200000 algorithmic-1var-s10-dense" "3 10 200000 algorithmic-3var-s10-dense" "3 30 60000 algorithmic-3var-s30-dense"
      "3 100 20000 algorithmic-3var-s100-dense")
TEST_VARIABLES=3 TEST_STATEMENTS="10 30 100"  # the last stage's test splits
RUNS=runs/algorithmic
FBT=${FBT:-build/fbt}  # the fbt that trains (a copy keeps a long recipe safe from rebuilds of build/)
SHIPPED=results/algorithmic
CHAIN_BEFORE=""  # the stage the first of STAGES starts from (none: from scratch)

five_variables() {  # the five-variable stages go on from the three-variable chain's last stage
  STAGES=(5var-s30 5var) CHAIN_BEFORE=3var-s100 TEST_VARIABLES=5 TEST_STATEMENTS="30 100"
  DATA=("5 30 60000 algorithmic-5var-s30-dense" "5 100 20000 algorithmic-5var-s100-dense")
}

stage_data() {  # VARIABLES STATEMENTS PROGRAMS DIR: a curriculum stage's data, every statement labelled in train
  [ -f "data/$4/train.txt" ] || "$FBT" prepare-algorithmic --variables "$1" --statements "$2" \
    --train-programs "$3" --label-every-statement "data/$4"
}

all_data() {
  local stage
  # shellcheck disable=SC2086
  for stage in "${DATA[@]}"; do stage_data $stage; done
}

# The weights the family's first stage starts from: the chain's earlier stage as trained here, else
# as shipped (the same weights: the recipe is deterministic); nothing for a chain from scratch.
chain_start() {  # FAMILY
  local run=$RUNS/$1-$CHAIN_BEFORE
  [ -n "$CHAIN_BEFORE" ] || return 0
  if python3 scripts/algorithmic_table.py --finished "$run" "configs/algorithmic/$1-$CHAIN_BEFORE.yaml" 2>/dev/null; then
    echo "$run"
  elif [ -f "$SHIPPED/$1-$CHAIN_BEFORE/model.safetensors" ]; then
    echo "$SHIPPED/$1-$CHAIN_BEFORE"
  else
    echo "./run algorithmic: $1-${STAGES[0]} starts from $1-$CHAIN_BEFORE, neither trained in $run nor shipped in $SHIPPED (run ./run algorithmic first)" >&2
    return 1
  fi
}

train_chain() {  # FAMILY START [fbt train flags]: the family's stages in order, its output in $RUNS/FAMILY.log, a line per stage
  local family=$1 start=$2 stage from=()
  shift 2
  [ -z "$start" ] || from=(--set "train.init_from=$start")  # the first stage only; the others name their predecessor
  for stage in "${STAGES[@]}"; do
    train_on_cores "$FBT" train "configs/algorithmic/$family-$stage.yaml" --resume "${from[@]}" "$@" \
      >>"$RUNS/$family.log" 2>&1 ||
      { echo "$family-$stage: training failed (last lines of $RUNS/$family.log):"; tail -3 "$RUNS/$family.log"; return 1; }
    python3 scripts/algorithmic_table.py --stage "$RUNS/$family-$stage"
    from=()
  done
}

train_all() {  # [fbt train flags]
  local family stage statements rows=() starts=()
  for family in "${FAMILIES[@]}"; do starts+=("$(chain_start "$family")") || exit 1; done
  all_data
  mkdir -p "$RUNS"
  echo "training ${FAMILIES[*]} side by side, a core each (follow: tail -f $RUNS/<family>.log)"
  local chain_a=(train_chain "${FAMILIES[0]}" "${starts[0]}" "$@") chain_b=(train_chain "${FAMILIES[1]}" "${starts[1]}" "$@")
  side_by_side_queues chain_a chain_b ||
    { echo "./run algorithmic: a stage failed; run it again to go on from the last checkpoints"; exit 1; }
  for family in "${FAMILIES[@]}"; do
    stage=$family-${STAGES[-1]}
    for statements in $TEST_STATEMENTS; do  # the final stage on the test split of each program length
      rows+=("$stage $statements $("$FBT" eval "configs/algorithmic/$stage.yaml" --checkpoint "$RUNS/$stage" \
        --split test --set "data.test=data/algorithmic-${TEST_VARIABLES}var-s$statements-dense/test.txt" | tail -1)")
    done
  done
  printf '%s\n' "${rows[@]}" | python3 scripts/algorithmic_table.py
}

# One family's first stage again from scratch, in DIR/<family>-<stage> (log beside it).
retrain_first() {  # FAMILY DIR
  local run=$2/$1-${STAGES[0]}
  rm -rf "$run"
  train_on_cores "$FBT" train "configs/algorithmic/$1-${STAGES[0]}.yaml" --resume --set "train.out_dir=$run" >"$run.log" 2>&1
}

# The chain's first link: each family's first stage trained again from scratch (side by side, a core
# each) and compared tensor by tensor with the shipped stage (fbt compare); exit 1 if any differs.
check() {
  local family rc=0 out=runs/algorithmic-check
  for family in "${FAMILIES[@]}"; do
    [ -f "$SHIPPED/$family-${STAGES[0]}/model.safetensors" ] || {
      echo "./run algorithmic --check: no shipped stage $SHIPPED/$family-${STAGES[0]}/model.safetensors to compare with (./run algorithmic trains it; docs/RESULTS.md)"
      exit 2
    }
  done
  # shellcheck disable=SC2086
  stage_data ${DATA[0]}
  mkdir -p "$out"
  local first_a=(retrain_first "${FAMILIES[0]}" "$out") first_b=(retrain_first "${FAMILIES[1]}" "$out")
  side_by_side_queues first_a first_b ||
    { tail -3 "$out"/*.log; echo "./run algorithmic --check: a retraining failed (logs in $out/)"; exit 1; }
  for family in "${FAMILIES[@]}"; do
    echo "retrained: $out/$family-${STAGES[0]}/model.safetensors shipped: $SHIPPED/$family-${STAGES[0]}/model.safetensors"
    "$FBT" compare "$out/$family-${STAGES[0]}/model.safetensors" "$SHIPPED/$family-${STAGES[0]}/model.safetensors" |
      tail -1 || rc=1
  done
  return "$rc"
}

# Every stage of both chains, finished at its recipe's steps, into results/algorithmic/<stage>/:
# the weights, the vocabulary, the metrics (curves, wall time) and the run's config, whose
# init_from and vocab name the shipped folders instead of runs/.
ship() {
  local family stage run dest previous
  for family in "${FAMILIES[@]}"; do
    for stage in "${STAGES[@]}"; do
      run=$RUNS/$family-$stage
      python3 scripts/algorithmic_table.py --finished "$run" "configs/algorithmic/$family-$stage.yaml" ||
        { echo "./run algorithmic --ship: $run has not finished its recipe (run ./run algorithmic)"; exit 1; }
    done
  done
  for family in "${FAMILIES[@]}"; do
    previous=${CHAIN_BEFORE:+$SHIPPED/$family-$CHAIN_BEFORE}
    for stage in "${STAGES[@]}"; do
      run=$RUNS/$family-$stage dest=$SHIPPED/$family-$stage
      rm -rf "$dest" && mkdir -p "$dest"
      cp "$run/model.safetensors" "$run/vocab.txt" "$run/metrics.jsonl" "$dest/"
      sed -e "s|^  vocab: .*|  vocab: $dest/vocab.txt|" -e "s|^  out_dir: .*|  out_dir: $run|" \
        -e "s|^  init_from: .*|  init_from: ${previous}|" "$run/config.yaml" >"$dest/config.yaml"
      echo "shipped: $dest"
      previous=$dest
    done
  done
}

usage() { echo "usage: ./run algorithmic [--variables 3|5] [--set KEY=VALUE ...] | --check | --ship [--variables 3|5]"; exit 2; }

variables() {  # N: the chain to train or ship
  case "$1" in
    3) ;;
    5) five_variables ;;
    *) echo "./run algorithmic: --variables takes 3 or 5 (got: '$1')"; usage ;;
  esac
}

case "${1:-}" in
  --check) [ $# -eq 1 ] || { echo "./run algorithmic --check takes no other arguments (got: ${*:2})"; usage; }; check ;;
  --ship)
    [ $# -eq 1 ] || { [ $# -eq 3 ] && [ "$2" = --variables ]; } ||
      { echo "./run algorithmic --ship takes only --variables N (got: ${*:2})"; usage; }
    [ $# -eq 1 ] || variables "$3"
    ship ;;
  *)
    flags=()
    while [ $# -gt 0 ]; do
      case "$1" in
        --set) [ $# -ge 2 ] && [[ "$2" == *=* ]] || { echo "./run algorithmic: --set takes KEY=VALUE"; usage; }
          flags+=(--set "$2"); shift 2 ;;
        --variables) [ $# -ge 2 ] || { echo "./run algorithmic: --variables takes 3 or 5"; usage; }
          variables "$2"; shift 2 ;;
        *) echo "./run algorithmic: unknown argument '$1'"; usage ;;
      esac
    done
    train_all "${flags[@]}" ;;
esac
