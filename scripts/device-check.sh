#!/usr/bin/env bash
# The device check, for the minutes a GPU (NVIDIA H100/H200) is lent: the CUDA kernels against
# their CPU twins, then the device suite on the GPU (every op, the model, training steps, sampling,
# bit-identical resume, all against the CPU), then fbt's speed on the GPU configs. It runs the
# binaries of scripts/device-bundle.sh (built beforehand on the CPU machine; nothing is built
# here) and refuses to start without them. Each stage is its own process with its own time limit
# (120 s for each half of the suite, 60 s for each speed config; about 6 minutes in all), so a
# fault in one does not hide the rest. The whole log goes to $OUT/device-check.log (or
# ./device-check.log), and the exit status is the first failing stage's.
#
#   scripts/device-check.sh [--peer]     --peer: the PyTorch peer on the same configs, if it has CUDA
set -uo pipefail
cd "$(dirname "$0")/.."
bundle=${FBT_BUNDLE:-device-bundle}
log="${OUT:-.}/device-check.log"
mkdir -p "$(dirname "$log")"
fail() { echo "device-check: $*"; exit 2; }

check() {
  [ -x "$bundle/bin/fbt" ] && [ -x "$bundle/bin/test_cuda" ] ||
    fail "no bundle in $bundle/ (scripts/device-bundle.sh on the CPU machine, then carry it): nothing is built here"
  isa=$(cat "$bundle/ISA" 2>/dev/null || echo unknown)
  if [ "$isa" = "x86-64-v3" ]; then
    for flag in avx2 fma; do grep -qw "$flag" /proc/cpuinfo || fail "the bundle is built for x86-64-v3 and this CPU has no $flag"; done
  else
    fail "the bundle names no CPU target it was built for ($bundle/ISA): rebuild it with scripts/device-bundle.sh"
  fi
  export LD_LIBRARY_PATH="$bundle/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
  # cuBLAS and NCCL are opened at run time: from the toolkit, or from PyTorch's wheels when that is all there is.
  for name in 'libcublas.so.1*' 'libnccl.so.2*'; do
    d=$(dirname "$(timeout 20 find /usr/local /usr/lib /opt -name "$name" -print -quit 2>/dev/null)" 2>/dev/null)
    [ -n "$d" ] && [ "$d" != . ] && export LD_LIBRARY_PATH="$d:$LD_LIBRARY_PATH"
  done
  echo "== $(date -u +%FT%TZ) bundle $(cat "$bundle/COMMIT" 2>/dev/null || echo '?') for $isa"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -2
  timeout 20 "$bundle/bin/fbt" --version
  status=0
  stage() {  # NAME SECONDS COMMAND...: one process, its own limit; the first failure sets the exit status
    local name=$1 secs=$2 t0=$SECONDS rc=0
    shift 2
    echo "== $name (limit ${secs} s)"
    timeout --kill-after=5 "$secs" "$@" || rc=$?
    echo "== $name: exit status $rc in $((SECONDS - t0)) s$([ "$rc" -eq 124 ] && echo ' (timed out)')"
    [ "$rc" -eq 0 ] || [ "$status" -ne 0 ] || status=$rc
  }
  # FBT_CUDA_SYNC=1: every kernel checked where it ran, so a fault names its kernel.
  stage "cuda kernels against the CPU" 120 env FBT_CUDA_SYNC=1 "$bundle/bin/test_cuda" --source-file='*test_cuda.cpp' --duration=true
  stage "device suite on the GPU" 120 env FBT_CUDA_SYNC=1 "$bundle/bin/test_cuda" --source-file='*test_device.cpp' --duration=true
  for c in gpu_exact gpu_windowed; do
    stage "fbt bench $c" 60 "$bundle/bin/fbt" bench --config "bench/$c.yaml" --set train.device=cuda --steps 2
  done
  if [ "${1:-}" = "--peer" ]; then
    if python3 -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
      for c in gpu_exact gpu_windowed; do stage "PyTorch peer $c" 60 python3 bench/peer.py "bench/$c.yaml" --device cuda --steps 2; done
    else
      echo "== no PyTorch with CUDA here: no peer"
    fi
  fi
  echo "== done: exit status $status; log in $log"
  exit "$status"
}

check "$@" 2>&1 | tee "$log"
exit "${PIPESTATUS[0]}"
