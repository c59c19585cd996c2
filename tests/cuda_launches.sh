#!/usr/bin/env bash
# Every CUDA kernel launches through launch() in backend/cuda/common.cuh (which launches nothing
# for an empty grid: a zero-block launch is an error on a GPU, and the emulated device cannot see
# launches). Prints any other launch in backend/cuda/; the exit status is their count.
set -u
dir="${1:-$(dirname "$0")/..}/backend/cuda"
[ -f "$dir/common.cuh" ] || { echo "no $dir/common.cuh"; exit 1; }
others=$(grep -n '<<<' "$dir"/*.cu "$dir"/*.cuh | grep -v 'common.cuh:.*kernel<<<' || true)
if [ -n "$others" ]; then
  echo "kernel launches outside launch() in $dir:"
  echo "$others"
  exit "$(echo "$others" | wc -l)"
fi
echo "every kernel launches through launch()"
