#!/usr/bin/env bash
# The command line on a device, end to end, with the emulated CUDA device (fbt-emulated: the fbt
# binary linked with backend/cuda/emulated.cpp, built for this test only): `train.device: cuda` trains
# with the CPU's losses, stops and resumes bit-identically; eval, greedy sample, forward --grads
# and grads with --device cuda agree with the CPU; bench runs there.  Usage: device_cli.sh FBT_EMULATED FBT
dev=$(realpath "$1")
cpu=$(realpath "$2")
source "$(dirname "$0")/lib.sh"
# Two columns of numbers agree to within a relative tol (the devices sum in other orders).
agree() {
  paste "$1" "$2" | awk -v tol="$3" '{ d = $1 - $2; if (d < 0) d = -d; s = $2 < 0 ? -$2 : $2;
    if (d > tol * (1 + s)) { print "differ: " $1 " vs " $2; bad = 1 } } END { exit bad }'
}

"$dev" --version | grep -q "device: emulated" || fail "fbt-emulated does not see its device"
bytes_corpus "$cpu" 200
cat > run.yaml <<YAML
model: {num_tokens: 256, dim: 32, depth: 2, heads: 2, dim_head: 16, mem_len: 8, seq_len: 2, ff_dropout: 0.1}
data: {format: bytes, train: data/train.bin, valid: data/valid.bin}
train: {batch_size: 3, bptt: 8, steps: 12, checkpoint_every: 5, eval_every: 0, eval_tokens: 300,
        sample_tokens: 0, threads: 1, log_every: 2, probe_every: 4, out_dir: OUT, device: cuda}
YAML

# Training: the CPU's losses; a session stopped at step 5 and resumed ends bit-identical.
"$dev" train run.yaml --set train.out_dir=dev > dev.log
"$cpu" train run.yaml --set train.out_dir=cpu --set train.device=cpu > cpu.log
grep -q "cuda: emulated" dev.log || fail "the device run does not say where it runs"
[ "$(grep -c '"split":"probe"' dev/metrics.jsonl)" -eq 3 ] || fail "the device run wrote no gradient probes"
for f in dev cpu; do sed -n 's/^step .*| loss \([0-9.]*\) .*/\1/p' $f.log > $f.loss; done
[ "$(wc -l < dev.loss)" -eq 6 ] || fail "expected 6 log lines, got $(wc -l < dev.loss)"
agree dev.loss cpu.loss 1e-4 || fail "training losses differ between the devices"
"$dev" train run.yaml --set train.out_dir=res --stop-at 5 > /dev/null
"$dev" train run.yaml --set train.out_dir=res --resume > /dev/null
cmp -s dev/model.safetensors res/model.safetensors || fail "resume on the device is not bit-identical"

# Evaluation and greedy sampling of the device-trained weights on both devices.
"$dev" eval run.yaml --checkpoint dev | sed -n 's/.*loss \([0-9.]*\) nats.*/\1/p' > e_dev
"$cpu" eval run.yaml --checkpoint dev --set train.device=cpu | sed -n 's/.*loss \([0-9.]*\) nats.*/\1/p' > e_cpu
[ -s e_dev ] || fail "no evaluation loss"
agree e_dev e_cpu 1e-5 || fail "evaluation differs between the devices"
"$dev" sample --checkpoint dev --prompt "In the" --tokens 40 --temperature 0 --device cuda > s_dev
"$cpu" sample --checkpoint dev --prompt "In the" --tokens 40 --temperature 0 > s_cpu
cmp -s s_dev s_cpu || fail "greedy samples differ between the devices"

# forward --grads and grads on one batch.
python3 - <<'PY'
import json, struct
ids = [(7 * i + 3) % 256 for i in range(2 * 6)]
tensors = {"inputs": ids, "targets": ids[1:] + ids[:1]}
header, body = {}, b""
for name, vals in tensors.items():
    data = struct.pack("<%di" % len(vals), *vals)
    header[name] = {"dtype": "I32", "shape": [2, 6], "data_offsets": [len(body), len(body) + len(data)]}
    body += data
h = json.dumps(header).encode()
h += b" " * (-len(h) % 8)
open("batch.safetensors", "wb").write(struct.pack("<Q", len(h)) + h + body)
PY
for d in dev cpu; do
  bin=$([ $d = dev ] && echo "$dev" || echo "$cpu")
  "$bin" forward --config run.yaml --weights dev/model.safetensors --batch batch.safetensors --out f_$d.st --grads \
    --device $([ $d = dev ] && echo cuda || echo cpu) | sed -n 's/^loss \([0-9.]*\) .*/\1/p' > f_$d
  "$bin" grads --config run.yaml --weights dev/model.safetensors --batch batch.safetensors \
    --out g_$d.jsonl --device $([ $d = dev ] && echo cuda || echo cpu) > /dev/null
  # every number of every measurement (lag, bias, jacobian), one per line
  python3 -c "import json; [print(v) for l in open('g_$d.jsonl') for v in json.loads(l).values() if type(v) in (int, float)]" > g_$d
done
agree f_dev f_cpu 1e-5 || fail "forward losses differ between the devices"
[ "$(wc -l < g_dev)" -gt 50 ] || fail "grads wrote too few measurements"
agree g_dev g_cpu 1e-3 || fail "gradient-flow measurements differ between the devices"
"$dev" bench --config run.yaml --steps 2 | grep -q '"peak_device_mb"' || fail "bench on the device reports no device memory"
"$dev" bench --config run.yaml --steps 2 --profile 2>/dev/null | grep -q '"op":"attention","phase":"backward"' ||
  fail "bench --profile on the device has no attention backward row"
echo "device CLI: training, resume, eval, sample, forward and grads agree with the CPU; bench and its profile run"
