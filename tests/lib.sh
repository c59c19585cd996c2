# What the shell tests share, sourced first thing after they read their arguments:
#   source "$(dirname "$0")/lib.sh"
# strict mode; fail MESSAGE; a scratch folder ($scratch) that becomes the working directory and is
# removed on exit, with any background job still running; bytes_corpus FBT LINES: LINES numbered
# verses in text.txt, prepared as bytes in data/ (train.bin, valid.bin, test.bin).
set -euo pipefail
fail() { echo "FAIL: $*"; exit 1; }
scratch=$(mktemp -d)
trap 'kill -9 $(jobs -p) 2>/dev/null || true; rm -rf "$scratch"' EXIT
cd "$scratch"
bytes_corpus() {
  local i
  for i in $(seq "$2"); do echo "In the beginning God created the heaven and the earth. $i"; done > text.txt
  "$1" prepare-bytes text.txt data >/dev/null
}
