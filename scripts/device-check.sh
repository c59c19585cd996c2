#!/usr/bin/env bash
# The device check: on a machine with an NVIDIA H100/H200, run the cuda suite (every CUDA kernel
# against its CPU twin, forward and backward, and determinism; then the device suite on the GPU:
# every op, the model, training steps, sampling, a run with bit-identical resume, all against the
# CPU), then fbt against the PyTorch peer on the GPU speed configs (bench/gpu_*.yaml), in one
# command under 10 minutes (the stages' time limits add up to 9).
#
#   scripts/device-check.sh            build if needed (Debian 12 + CUDA, as ./run), then test
#   FBT_BUNDLE=device-bundle scripts/device-check.sh
#                                      use the binaries and libraries scripts/device-bundle.sh packed
#                                      (a machine that cannot install the build's packages)
set -uo pipefail
cd "$(dirname "$0")/.."
[ -x /usr/local/cuda/bin/nvcc ] && export PATH="/usr/local/cuda/bin:$PATH"
if [ -n "${FBT_BUNDLE:-}" ]; then
  bin="$FBT_BUNDLE/bin" suite="$FBT_BUNDLE/bin/test_cuda"
  export LD_LIBRARY_PATH="$FBT_BUNDLE/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
else
  bin=build suite=build/tests/test_cuda
  if [ ! -x "$suite" ] || [ ! -x build/fbt ]; then
    ./run build || exit 1
  fi
fi
# cuBLAS is opened at run time: from the toolkit, or from PyTorch's wheels when that is all there is.
cuda_libs=$(dirname "$(timeout 20 find /usr/local /usr/lib /opt -name 'libcublas.so.1*' -print -quit 2>/dev/null)" 2>/dev/null)
export LD_LIBRARY_PATH="${cuda_libs:-}:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || true
"$bin/fbt" --version
echo "== cuda suite"
timeout 180 "$suite" --duration=true
rc=$?
echo "== cuda suite exit status $rc"
echo "== fbt on the GPU"
for c in gpu_exact gpu_windowed; do
  timeout 90 "$bin/fbt" bench --config "bench/$c.yaml" --set train.device=cuda --steps 3 || echo "fbt on $c: failed or timed out"
done
echo "== PyTorch peer on the GPU"
if python3 -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  for c in gpu_exact gpu_windowed; do
    timeout 90 python3 bench/peer.py "bench/$c.yaml" --device cuda --steps 3 || echo "peer on $c: failed or timed out"
  done
else
  echo "no PyTorch with CUDA here"
fi
exit $rc
