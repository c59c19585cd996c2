#!/usr/bin/env bash
# The three tokenizers through the binary: fbt prepare, a run that stops and resumes, fbt sample
# from a text prompt, fbt eval with bits per byte; and prepare's errors.  Usage: tokenizers_cli.sh FBT
fbt=$(realpath "$1")
source "$(dirname "$0")/lib.sh"
for i in $(seq 600); do echo "And God said, Let there be light $i: and there was light. Café $((i % 7))."; done > corpus.txt

for tok in bytes words sentencepiece; do
  extra=()
  [ "$tok" = sentencepiece ] && extra=(--vocab-size 320)
  "$fbt" prepare --tokenizer "$tok" "${extra[@]}" corpus.txt "data-$tok" >"prepare-$tok.log" || { cat "prepare-$tok.log"; fail "prepare $tok"; }
  format=$(sed -n 's/^  format: //p' "prepare-$tok.log")
  ids=$(sed -n 's/^(model.num_tokens: \([0-9]*\))$/\1/p' "prepare-$tok.log")
  model_line=""
  [ "$tok" != bytes ] && model_line="tokenizer: $tok, tokenizer_model: data-$tok/$([ "$tok" = words ] && echo vocab.txt || echo tokenizer.model),"
  cat > "$tok.yaml" <<YAML
model: {num_tokens: $ids, dim: 16, depth: 2, heads: 2, dim_head: 8, mem_len: 8}
data: {format: $format, $model_line train: data-$tok/train.bin, valid: data-$tok/valid.bin, test: data-$tok/test.bin}
train: {batch_size: 2, bptt: 8, steps: 6, eval_every: 0, eval_tokens: 200, checkpoint_every: 3, sample_tokens: 5,
        sample_prompt: "And God", threads: 1, out_dir: run-$tok}
YAML
  "$fbt" train "$tok.yaml" --stop-at 3 >/dev/null || fail "train $tok"
  "$fbt" train "$tok.yaml" --resume >"train-$tok.log" 2>&1 || { cat "train-$tok.log"; fail "resume $tok"; }
  grep -q "resuming from .*step_00000003" "train-$tok.log" || fail "$tok did not resume"
  grep -q "bpb" "train-$tok.log" || { cat "train-$tok.log"; fail "$tok: no bpb in the log"; }
  "$fbt" sample --checkpoint "run-$tok" --prompt "And God" --tokens 5 >"sample-$tok.txt" || fail "sample $tok"
  grep -q "^And God" "sample-$tok.txt" || { cat "sample-$tok.txt"; fail "$tok: sample does not start with the prompt"; }
  "$fbt" eval "$tok.yaml" --checkpoint "run-$tok" --split test | tail -1 | grep -q '"bpb":' || fail "$tok: fbt eval has no bpb"
done
# --raw writes the sampled bytes unchanged; the default output is valid UTF-8.
"$fbt" sample --checkpoint run-bytes --prompt "And God" --tokens 50 --raw >raw.txt || fail "sample --raw"
"$fbt" sample --checkpoint run-bytes --prompt "And God" --tokens 50 | iconv -f UTF-8 -t UTF-8 >/dev/null || fail "sample output is not UTF-8"


# Errors: one line each, naming the file.
if "$fbt" prepare --tokenizer sentencepiece --vocab-size 50000 corpus.txt big >big.log 2>&1; then fail "an oversized vocabulary was accepted"; fi
grep -q "corpus.txt: cannot train a SentencePiece model of 50000 pieces: Vocabulary size too high" big.log || { cat big.log; fail "too-small corpus not named"; }
if "$fbt" prepare --tokenizer sentencepiece --tokenizer-model nothing.model corpus.txt x >none.log 2>&1; then fail "a missing tokenizer model was accepted"; fi
grep -q "nothing.model" none.log || { cat none.log; fail "missing tokenizer model not named"; }
echo "ok"
