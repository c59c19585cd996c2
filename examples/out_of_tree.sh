#!/usr/bin/env bash
# Installs fbt into a scratch root, builds the training example with nothing but the installed
# headers and `pkg-config --cflags --libs fbt`, runs it, and has the installed `fbt sample` read
# the checkpoint it wrote.  Usage: out_of_tree.sh BUILD_DIR EXAMPLE.cpp PREFIX LIBDIR INCLUDEDIR [SANITIZE]
# (SANITIZE: meson's b_sanitize; a sanitized library needs the program built with the same flags)
set -euo pipefail
build=$1; src=$2; prefix=$3; libdir=$4; includedir=$5; sanitize=${6:-none}
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
meson install -C "$build" --no-rebuild --destdir "$root" >/dev/null
case "$libdir" in /*) lib="$root$libdir" ;; *) lib="$root$prefix/$libdir" ;; esac
case "$includedir" in /*) inc="$root$includedir" ;; *) inc="$root$prefix/$includedir" ;; esac
export PKG_CONFIG_PATH="$lib/pkgconfig" PKG_CONFIG_SYSROOT_DIR="$root"
flags=$(pkg-config --cflags --libs fbt)
echo "pkg-config: $flags"
cp "$src" "$root/main.cpp"
# Only the install tree may be on the include path: no -I into the source tree.
san=()
[ "$sanitize" != none ] && san=(-fsanitize="$sanitize")
(cd "$root" && g++ -std=c++20 -O1 "${san[@]}" main.cpp $flags -o app)
if grep -rlE "include <(Eigen|cuda)" "$inc/fbt" ; then echo "public headers expose Eigen/CUDA"; exit 1; fi
export LD_LIBRARY_PATH="$lib"
"$root/app" "$root/ckpt.safetensors"
"$root$prefix/bin/fbt" sample --checkpoint "$root/ckpt.safetensors" --prompt "In the" --tokens 30
# The Python module, where it was built: installed where Debian's python3 looks (under the
# default prefix), and importable from the install tree alone.
module=$(find "$root" -name 'fbt.cpython-*.so' | head -1)
if [ -n "$module" ]; then
  site=$(dirname "${module#"$root"}")
  if [ "$prefix" = /usr/local ] || [ "$prefix" = /usr ]; then
    /usr/bin/python3 -c "import sys; sys.exit(0 if '$site' in sys.path else 1)" ||
      { echo "the Python module went to $site, which Debian's python3 does not search"; exit 1; }
  fi
  PYTHONPATH="$root$site" /usr/bin/python3 -c "
import numpy as np, fbt
model = fbt.load('$root/ckpt.safetensors')
assert model(np.zeros((1, 4), dtype=np.int64)).shape == (1, 4, model.config['num_tokens'])
print('python module from the install tree:', fbt.__file__)"
fi
