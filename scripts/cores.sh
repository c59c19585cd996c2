# Sourced by the recipe scripts (algorithmic.sh, lm_compare.sh): two queues of training runs side by
# side, a core each; when one queue ends, the run the other is in takes every core: it is stopped
# (SIGTERM: fbt checkpoints and exits) and resumed at once with train.threads 0. No result depends
# on the thread count and resume is bit-exact, so this changes the wall time only.

WIDE=0    # this queue has every core (the other queue has ended)
RUN_PID=  # the queue's fbt train now running

# fbt train ARGS... (ARGS with --resume): on one core, or on every core once the queue is widened;
# a run stopped to widen goes on at once. Returns fbt's exit status.
train_on_cores() {
  local rc wide
  while :; do
    wide=$WIDE
    "$@" --set "train.threads=$([ "$wide" = 1 ] && echo 0 || echo 1)" &
    RUN_PID=$!
    rc=0
    wait "$RUN_PID" || rc=$?
    while kill -0 "$RUN_PID" 2>/dev/null; do  # the signal ended the wait, not the run
      rc=0
      wait "$RUN_PID" || rc=$?
    done
    RUN_PID=
    [ "$wide" = 0 ] && [ "$WIDE" = 1 ] || return "$rc"
  done
}

# A queue's subshell, first thing: SIGUSR1 widens it.
widen_on_usr1() {
  trap 'WIDE=1; [ -z "$RUN_PID" ] || kill -TERM "$RUN_PID" 2>/dev/null || true' USR1
}

# A B: the names of two arrays, each a command (a queue of train_on_cores runs), run side by side;
# the one still running when the other ends is widened. Returns 1 if either failed.
side_by_side_queues() {
  local -n cores_queue_a=$1 cores_queue_b=$2
  local a b rc=0
  (widen_on_usr1; "${cores_queue_a[@]}") &
  a=$!
  (widen_on_usr1; "${cores_queue_b[@]}") &
  b=$!
  while kill -0 "$a" 2>/dev/null && kill -0 "$b" 2>/dev/null; do sleep 2; done
  kill -USR1 "$a" "$b" 2>/dev/null || true  # the one still running
  wait "$a" || rc=1
  wait "$b" || rc=1
  return "$rc"
}
