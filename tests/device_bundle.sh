#!/usr/bin/env bash
# The GPU check's pre-flight on the CPU (issue 34): the device scripts parse; device-check.sh
# refuses to start without a bundle (nothing is built on the GPU machine) and still writes its
# log where the device tool collects it; and, where scripts/device-bundle.sh has made one, the
# bundle is complete (every library its binaries load comes from the bundle, the CUDA toolkit or
# the base system), names its CPU target and fits the 64 MiB the device tool carries.
# Usage: device_bundle.sh SOURCE_DIR
src=$(realpath "$1")
source "$(dirname "$0")/lib.sh"
bash -n "$src/scripts/device-check.sh" || fail "device-check.sh does not parse"
bash -n "$src/scripts/device-bundle.sh" || fail "device-bundle.sh does not parse"
set +e
FBT_BUNDLE="$scratch/none" OUT="$scratch/results" "$src/scripts/device-check.sh" >"$scratch/run.txt" 2>&1
rc=$?
set -e
[ "$rc" -eq 2 ] || { cat "$scratch/run.txt"; fail "device-check.sh without a bundle: exit status $rc, expected 2"; }
grep -q "no bundle in $scratch/none/" "$scratch/results/device-check.log" ||
  { cat "$scratch/run.txt"; fail "the refusal is not in \$OUT/device-check.log"; }
echo "scripts parse; device-check.sh refuses to run without a bundle, log in \$OUT"
bundle="$src/device-bundle"
if [ ! -d "$bundle" ]; then
  echo "no device-bundle/ here (scripts/device-bundle.sh makes one where nvcc is): its checks skipped"
  exit 0
fi
[ "$(cat "$bundle/ISA" 2>/dev/null)" = "x86-64-v3" ] || fail "the bundle does not say it is built for x86-64-v3"
size=$(du -sb "$bundle" | cut -f1)
[ "$size" -lt $((60 * 1024 * 1024)) ] || fail "the bundle is $size bytes, over the 60 MiB kept below the device tool's 64 MiB"
for exe in "$bundle/bin/fbt" "$bundle/bin/test_cuda"; do
  objdump -d "$exe" | grep -q zmm && fail "$exe uses AVX-512 registers: not an x86-64-v3 build"
  LD_LIBRARY_PATH="$bundle/lib:/usr/local/cuda/lib64" ldd "$exe" | awk -v b="$bundle/lib/" '
    /not found/ { print "missing: " $1; bad = 1; next }
    /=> \// {
      lib = $3; name = $1
      if (index(lib, b) == 1 || index(lib, "/usr/local/cuda/") == 1) next
      if (name ~ /^(libc|libm|libdl|libpthread|librt|libgcc_s|libstdc\+\+|ld-linux-x86-64)\.so/) next
      print "from the system, not the bundle: " name " (" lib ")"; bad = 1
    }
    END { exit bad }' || fail "$exe needs libraries the bundle lacks"
done
echo "bundle: $(du -sh "$bundle" | cut -f1), x86-64-v3, every library from the bundle, CUDA or the base system"
