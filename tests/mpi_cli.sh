#!/usr/bin/env bash
# Data-parallel training under mpirun (docs/DISTRIBUTED.md), one case per call:
#   mpi_cli.sh FBT CASE [FBT_EMULATED]    CASE: accum | tolerance | resume | kill | errors | tcp | nccl
# Skipped (77) where mpirun is missing or fbt was built without MPI.
fbt=$(realpath "$1")
dev=${3:+$(realpath "$3")}  # fbt-emulated, for the nccl case
source "$(dirname "$0")/lib.sh"
case_name=$2
command -v mpirun >/dev/null || { echo "mpirun not installed (./run installs openmpi-bin)"; exit 77; }
"$fbt" --version | grep -q "data-parallel: MPI" || { echo "fbt was built without MPI"; exit 77; }
# Containers run as root; 3 ranks on 2 cores need oversubscription; Open MPI's own allocations
# are not ours to leak-check in the sanitized build.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"
mpi() { local n=$1; shift; mpirun -np "$n" --bind-to none "$@"; }

bytes_corpus "$fbt" 400
# Dropout on: each micro-batch's dropout stream must match its rank's.
cat > run.yaml <<YAML
model: {num_tokens: 256, dim: 32, depth: 2, heads: 2, dim_head: 16, mem_len: 16, attn_dropout: 0.1, ff_dropout: 0.1}
data: {format: bytes, train: data/train.bin, valid: data/valid.bin}
train: {batch_size: 6, bptt: 16, steps: 40, warmup: 5, lr: 3e-3, eval_every: 20, log_every: 1, checkpoint_every: 10,
        sample_tokens: 0, threads: 1, out_dir: run}
YAML
same() { cmp "$1/model.safetensors" "$2/model.safetensors" || { echo "$1 and $2 differ"; exit 1; }; }
train_lines() { grep -c '"split":"train"' "$1/metrics.jsonl"; }

case "$case_name" in
accum)  # N processes == one process with grad_accum N, bit for bit (2, and 3 oversubscribed); N = 1 == today
  mpi 1 "$fbt" train run.yaml --set train.out_dir=ranks1 >/dev/null
  "$fbt" train run.yaml --set train.out_dir=plain >/dev/null
  same ranks1 plain
  for n in 2 3; do
    mpi "$n" "$fbt" train run.yaml --set train.out_dir=ranks$n >/dev/null
    "$fbt" train run.yaml --set train.out_dir=accum$n --set train.grad_accum=$n >/dev/null
    same ranks$n accum$n
    [ "$(train_lines ranks$n)" -eq 40 ] || { echo "ranks$n: expected 40 train lines (only rank 0 writes)"; exit 1; }
    [ "$(ls ranks$n/checkpoints | wc -l)" -eq 3 ] || { echo "ranks$n: expected 3 checkpoints"; exit 1; }
  done
  echo "1 process under mpirun matches a plain run; 2 and 3 processes match grad_accum 2 and 3 bit for bit" ;;
tolerance)  # N processes vs one plain process: every logged loss within 1e-5 relative over 50 steps
  over=(--set train.steps=50 --set model.attn_dropout=0 --set model.ff_dropout=0)
  mpi 2 "$fbt" train run.yaml --set train.out_dir=ranks "${over[@]}" >/dev/null
  "$fbt" train run.yaml --set train.out_dir=plain "${over[@]}" >/dev/null
  /usr/bin/python3 - <<'PY'
import json
def losses(run):
    return [json.loads(l)["loss"] for l in open(run + "/metrics.jsonl") if '"split":"train"' in l]
a, b = losses("ranks"), losses("plain")
assert len(a) == len(b) == 50, (len(a), len(b))
worst = max(abs(x - y) / abs(y) for x, y in zip(a, b))
print(f"50 losses, worst relative difference {worst:.2e}")
assert worst <= 1e-5, worst
PY
  ;;
resume)  # a 2-process session stopped and resumed == uninterrupted; resumed on 1 and 3 processes it goes on
  mpi 2 "$fbt" train run.yaml --set train.out_dir=whole >/dev/null
  mpi 2 "$fbt" train run.yaml --set train.out_dir=cut --stop-at 15 >/dev/null
  mpi 2 "$fbt" train run.yaml --set train.out_dir=cut --resume >/dev/null
  same whole cut
  for n in 1 3; do
    mpi 2 "$fbt" train run.yaml --set train.out_dir=resplit$n --stop-at 20 >/dev/null
    mpi "$n" "$fbt" train run.yaml --set train.out_dir=resplit$n --resume > out$n.txt
    grep -q "written by 2 processes, resuming with $n" out$n.txt || { cat out$n.txt; exit 1; }
    [ -f resplit$n/model.safetensors ] || { echo "resplit$n: no final weights"; exit 1; }
  done
  echo "resume with 2 processes is bit-exact; resumed on 1 and 3 the streams are split anew" ;;
kill)  # SIGKILL of the whole job, then a resume: bit-identical to the uninterrupted run
  long=(--set train.steps=400 --set train.checkpoint_every=20 --set train.eval_every=0)
  mpi 2 "$fbt" train run.yaml --set train.out_dir=whole "${long[@]}" >/dev/null
  setsid mpirun -np 2 --bind-to none "$fbt" train run.yaml --set train.out_dir=killed "${long[@]}" >/dev/null 2>&1 &
  job=$!
  for _ in $(seq 600); do [ -d killed/checkpoints/step_00000040 ] && break; sleep 0.05; done
  pkill -9 -f "out_dir=killed" || true  # mpirun and both ranks at once
  wait "$job" 2>/dev/null || true
  while pgrep -f "out_dir=killed" >/dev/null; do sleep 0.05; done
  [ ! -f killed/model.safetensors ] || { echo "the job finished before the kill; lengthen it"; exit 1; }
  mpi 2 "$fbt" train run.yaml --set train.out_dir=killed "${long[@]}" --resume >/dev/null
  same whole killed
  # A rank that dies takes the job down, with no partial checkpoint left.
  setsid mpirun -np 2 --bind-to none "$fbt" train run.yaml --set train.out_dir=dies "${long[@]}" > dies.txt 2>&1 &
  job=$!
  for _ in $(seq 600); do [ -d dies/checkpoints/step_00000020 ] && break; sleep 0.05; done
  victim=$(pgrep -f "out_dir=dies" | while read -r p; do [ "$(cat /proc/"$p"/comm)" = fbt ] && echo "$p"; done | tail -1)
  kill -9 "$victim"
  rc=0
  timeout 60 tail --pid="$job" -f /dev/null || { echo "the job outlived its dead rank"; exit 1; }
  wait "$job" || rc=$?
  [ "$rc" -ne 0 ] || { echo "the job exited 0 after a rank died"; exit 1; }
  grep -qi "signal 9\|killed" dies.txt || { cat dies.txt; exit 1; }
  for c in dies/checkpoints/step_*; do
    case "$c" in *.tmp) continue ;; esac
    [ -f "$c/DONE" ] || { echo "$c is incomplete"; exit 1; }
  done
  echo "resume after SIGKILL is bit-exact; a dead rank ends the job (exit $rc)" ;;
errors)  # bad launches: one clear line and a non-zero exit
  if mpi 4 "$fbt" train run.yaml --set train.out_dir=bad > err.txt 2>&1; then echo "batch 6 on 4 processes accepted"; exit 1; fi
  grep -q "train.batch_size 6 does not split among 4 processes" err.txt || { cat err.txt; exit 1; }
  mpi 2 "$fbt" train run.yaml --set train.out_dir=cfg --stop-at 10 >/dev/null
  if mpi 2 "$fbt" train run.yaml --set train.out_dir=cfg --set model.dim=64 --resume > err.txt 2>&1; then
    echo "a resume with another model accepted"; exit 1
  fi
  grep -q "model config differs" err.txt || { cat err.txt; exit 1; }
  echo "bad launches refused" ;;
tcp)  # two ranks over TCP on loopback, as two machines talk
  mpi 2 --mca btl self,tcp --mca btl_tcp_if_include lo "$fbt" train run.yaml --set train.out_dir=tcp >/dev/null
  "$fbt" train run.yaml --set train.out_dir=accum --set train.grad_accum=2 >/dev/null
  same tcp accum
  echo "2 ranks over TCP match grad_accum 2" ;;
nccl)  # on a device every rank must agree on NCCL: with rank 0 alone claiming it (the emulated
  # device, FBT_EMULATED_NCCL_RANK) both sum through the host, as when neither has it
  short=(--set train.device=cuda --set train.steps=8 --set train.eval_every=0 --set train.checkpoint_every=0)
  timeout 300 mpirun -np 2 --bind-to none -x FBT_EMULATED_NCCL_RANK=0 "$dev" train run.yaml --set train.out_dir=claim \
    "${short[@]}" > claim.txt 2>&1 || { cat claim.txt; echo "ranks that disagree on NCCL did not train"; exit 1; }
  mpi 2 "$dev" train run.yaml --set train.out_dir=none "${short[@]}" >/dev/null
  same claim none
  echo "ranks that disagree on NCCL sum through the host together" ;;
*) echo "unknown case $case_name"; exit 2 ;;
esac
