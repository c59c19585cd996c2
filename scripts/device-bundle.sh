#!/usr/bin/env bash
# Packs what scripts/device-check.sh runs into device-bundle/ (ignored by git), for a GPU machine
# that has none of this project's packages and no time to build: the fbt binary and the cuda
# suite, built for x86-64-v3 (AVX2/FMA: any x86 GPU host of the last decade, AVX-512 or not; the
# same weights bit for bit, docs/DISTRIBUTED.md) in build-bundle/, and the shared libraries they
# need beyond glibc, libstdc++ and the CUDA runtime. Carry it with the working tree (the device
# tool's `carry: ["device-bundle"]`; it must stay under the 64 MiB it allows) and run
#   scripts/device-check.sh
# Needs nvcc (/usr/local/cuda/bin) and the packages ./run installs.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x /usr/local/cuda/bin/nvcc ] && export PATH="/usr/local/cuda/bin:$PATH"
command -v nvcc >/dev/null || { echo "device-bundle: no nvcc (CUDA toolkit in /usr/local/cuda): cannot build the CUDA kernels"; exit 1; }
# No MPI (one GPU, one process) and no Python: fewer libraries to carry.
[ -f build-bundle/build.ninja ] || meson setup build-bundle --buildtype=release -Dcpu_arch=x86-64-v3 -Dcuda=enabled \
  -Dmpi=disabled -Dpython=disabled >/dev/null
ninja -C build-bundle fbt tests/test_cuda >/dev/null
out=device-bundle
rm -rf "$out"
mkdir -p "$out/bin" "$out/lib"
cp build-bundle/fbt build-bundle/tests/test_cuda "$out/bin/"
for lib in $(ldd build-bundle/fbt build-bundle/tests/test_cuda | awk '/=> \// {print $3}' | sort -u); do
  case "$(basename "$lib")" in
    libc.so* | libm.so* | libdl.so* | libpthread.so* | librt.so* | libgcc_s.so* | libstdc++.so* | libcudart.so*) ;;
    *) cp -L "$lib" "$out/lib/" ;;
  esac
done
echo "x86-64-v3" > "$out/ISA"  # device-check.sh checks the host's CPU against it
git rev-parse HEAD > "$out/COMMIT" 2>/dev/null || true
echo "device-bundle: $(du -sh "$out" | cut -f1) ($(ls "$out/lib" | wc -l) libraries), for x86-64-v3"
