#!/usr/bin/env bash
# train_loop example -> checkpoint -> sample example and `fbt sample` both read it.
set -euo pipefail
train=$(realpath "$1"); sample=$(realpath "$2"); fbt=$(realpath "$3")
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
"$train" "$dir/model.safetensors"
"$sample" "$dir/model.safetensors" "In the"
"$fbt" sample --checkpoint "$dir/model.safetensors" --prompt "In the" --tokens 40 --seed 3
