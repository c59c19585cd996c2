#!/usr/bin/env bash
# The layering rule (docs/ARCHITECTURE.md): a file includes only its own layer and the ones below
# it. Layers, lowest first; a folder's subfolders belong to it (backend/cpu is backend).
set -euo pipefail
cd "${1:-$(dirname "$0")/..}"
layers=(util backend autograd ops nn models data train research cli python)
rank() { local i; for i in "${!layers[@]}"; do [ "${layers[$i]}" = "$1" ] && echo "$i" && return; done; echo -1; }
bad=0
for dir in "${layers[@]}"; do
  own=$(rank "$dir")
  while IFS=: read -r file line inc; do
    target=${inc#*\"}; target=${target%%/*}
    r=$(rank "$target")
    if [ "$r" -gt "$own" ]; then
      echo "$file:$line: $dir/ (layer $own) includes $target/ (layer $r): ${inc#*#include }"
      bad=1
    fi
  done < <(grep -rn --include='*.hpp' --include='*.cpp' --include='*.cu' '^#include "' "$dir" || true)
done
[ "$bad" -eq 0 ] && echo "layering holds: ${layers[*]}"
exit "$bad"
