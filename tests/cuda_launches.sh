#!/usr/bin/env bash
# Every CUDA kernel launches through launch() in backend/cuda/kernels.cu (which launches nothing
# for an empty grid: a zero-block launch is an error on a GPU, and the emulated device cannot see
# launches). Prints any other launch; the exit status is their count.
set -u
src="${1:-$(dirname "$0")/..}/backend/cuda/kernels.cu"
[ -f "$src" ] || { echo "no $src"; exit 1; }
others=$(grep -n '<<<' "$src" | grep -v 'kernel<<<' || true)
if [ -n "$others" ]; then
  echo "kernel launches outside launch() in $src:"
  echo "$others"
  exit "$(echo "$others" | wc -l)"
fi
echo "every kernel launches through launch()"
