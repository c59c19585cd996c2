#!/usr/bin/env bash
# pip packaging (pyproject.toml, meson-python): a wheel built with `pip wheel --no-build-isolation`
# installs into a fresh venv (Debian's system site packages for numpy) and imports from outside
# the tree, with no PYTHONPATH or LD_LIBRARY_PATH; the README's snippet runs on it. Usage: python_package.sh SOURCE_DIR. Skipped (77) without
# python3-venv, pip or meson-python (./run installs them).
src=$(realpath "$1")
source "$(dirname "$0")/lib.sh"
py=/usr/bin/python3
for mod in venv pip mesonpy numpy; do
  "$py" -c "import $mod" 2>/dev/null || { echo "skipped: $py has no $mod (./run installs it)"; exit 77; }
done
"$py" -m venv --system-site-packages venv
# The wheel from the source tree (a copy: pip builds in place, and tests may run beside other builds)
mkdir tree && (cd "$src" && git ls-files -z --cached --others --exclude-standard 2>/dev/null || find . -type f -print0) | (cd "$src" && xargs -0 cp --parents -t "$scratch/tree")
venv/bin/pip wheel --no-build-isolation --no-deps -w wheels ./tree >wheel.log 2>&1 || { tail -30 wheel.log; exit 1; }
venv/bin/pip install --no-deps wheels/fbt-*.whl >install.log 2>&1 || { tail -30 install.log; exit 1; }
unset PYTHONPATH LD_LIBRARY_PATH
venv/bin/python - <<'PY'
import contextlib, io, os
import numpy as np
import fbt
assert fbt.__file__.startswith(os.path.realpath("venv")), fbt.__file__  # the installed one, not the build tree's
print("fbt", fbt.__version__, "from", fbt.__file__)
model = fbt.FeedbackTransformer(num_tokens=20000, dim=512, depth=6, seq_len=2, mem_len=256,
                                dim_head=64, heads=8, attn_dropout=0.1, ff_dropout=0.1)
x = np.random.randint(0, 20000, (2, 64))
logits = model(x)
assert logits.shape == (2, 64, 20000), logits.shape
logits, memory = model(x, return_memory=True)
logits, memory = model(x, memory=memory, return_memory=True)
assert memory.shape == (2, 128, 512), memory.shape
loss, grads, memory_grads = model.loss_and_grads(x, np.roll(x, -1, axis=1), detach="horizon:8")
assert np.isfinite(loss)
print("the README snippet runs on the installed wheel")
PY
echo "ok: $(ls wheels)"
