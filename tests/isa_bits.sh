#!/usr/bin/env bash
# The AVX2 path trains the same weights as the AVX-512 path, bit for bit: the feedback model and
# the Transformer-XL baseline (GEGLU, layernorm, attention at a head size with a partial vector,
# few-row and many-row products, windows), built for this machine and for x86-64-v3.
# Usage: isa_bits.sh FBT FBT_AVX2. Skipped (77) where this CPU or build has no AVX-512.
fbt=$(realpath "$1") avx2=$(realpath "$2")
source "$(dirname "$0")/lib.sh"
"$avx2" --version | grep -q "cpu vectors: avx2" || { echo "$avx2 is not an AVX2 build"; exit 1; }
if ! "$fbt" --version | grep -q "cpu vectors: avx512"; then
  echo "skipped: $fbt is not an AVX-512 build ($("$fbt" --version | grep 'cpu vectors'))"; exit 77
fi
bytes_corpus "$fbt" 300
# dim_head 24: 16 + 8 lanes, a partial vector with AVX-512, whole ones with AVX2; batch 6 x seq_len 1
# uses the few-row products, bptt 24 x batch 6 the packed ones; attention dropout draws masks.
cat > feedback.yaml <<YAML
model: {num_tokens: 256, dim: 72, depth: 2, heads: 3, dim_head: 24, mem_len: 12, ff_dropout: 0.1, attn_dropout: 0.1}
data: {format: bytes, train: data/train.bin, valid: data/valid.bin}
train: {batch_size: 6, bptt: 24, steps: 12, eval_every: 0, sample_tokens: 0, log_every: 4, threads: 2}
YAML
sed 's/^model: {/model: {type: transformer_xl, /' feedback.yaml > xl.yaml
sed "s/^model: {/model: {seq_len: 4, /" feedback.yaml > window.yaml
for cfg in feedback xl window; do
  "$fbt" train $cfg.yaml --set train.out_dir=native-$cfg >/dev/null
  "$avx2" train $cfg.yaml --set train.out_dir=avx2-$cfg >/dev/null
  if cmp -s native-$cfg/model.safetensors avx2-$cfg/model.safetensors; then
    echo "$cfg: identical weights"
  else
    echo "$cfg: the AVX2 build's weights differ from the AVX-512 build's"; exit 1
  fi
done
