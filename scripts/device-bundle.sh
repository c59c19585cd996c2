#!/usr/bin/env bash
# Packs what scripts/device-check.sh runs into device-bundle/ (ignored by git), for a GPU machine
# that cannot install this project's packages: the fbt binary, the cuda suite, libfbt and the
# shared libraries they need beyond glibc, libstdc++ and the CUDA runtime (yaml-cpp,
# fmt, gfortran, gomp), ~45 MB. Carry it to the machine and run
#   FBT_BUNDLE=device-bundle scripts/device-check.sh
# Build first (./run build; nvcc must have been found: `build/fbt --version` lists cuda).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x build/tests/test_cuda ] || { echo "no build/tests/test_cuda: build with CUDA first (./run build)"; exit 1; }
out=device-bundle
rm -rf "$out"
mkdir -p "$out/bin" "$out/lib"
cp build/fbt build/tests/test_cuda "$out/bin/"
for lib in $(ldd build/fbt build/tests/test_cuda | awk '/=> \// {print $3}' | sort -u); do
  case "$(basename "$lib")" in
    libc.so* | libm.so* | libdl.so* | libpthread.so* | librt.so* | libgcc_s.so* | libstdc++.so* | libcudart.so*) ;;
    *) cp -L "$lib" "$out/lib/" ;;
  esac
done
du -sh "$out"
