"""The Python module `fbt` (python/): the seed's snippets, agreement with the fbt
binary on the same weights, the research tools against `fbt grads`, training, and the errors.

Run by meson (suite python) one test at a time: test_fbt.py Class.test_name, with PYTHONPATH at
the built module and FBT_BIN the fbt binary."""
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import unittest

try:
    import numpy as np
except ImportError:  # the README's set-up installs python3-numpy
    print("numpy is not installed (./run installs python3-numpy)")
    sys.exit(77)

import fbt

FBT = os.environ.get("FBT_BIN", "fbt")
DTYPES = {"F32": np.float32, "I32": np.int32, "I64": np.int64}


def write_safetensors(path, tensors):
    """A safetensors file of numpy arrays (the format: an 8-byte header length, a JSON header, data)."""
    header, blobs, offset = {}, [], 0
    for name, array in tensors.items():
        array = np.ascontiguousarray(array)
        dtype = {v: k for k, v in DTYPES.items()}[array.dtype.type]
        data = array.tobytes()
        header[name] = {"dtype": dtype, "shape": list(array.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        lo, hi = t["data_offsets"]
        out[name] = np.frombuffer(raw[8 + n + lo:8 + n + hi], dtype=DTYPES[t["dtype"]]).reshape(t["shape"])
    return out


def model_yaml(model):
    """A config file with the model's `model:` section, as the fbt commands read it."""
    items = []
    for k, v in model.config.items():
        items.append(f"{k}: {str(v).lower() if isinstance(v, bool) else v}")
    return "model: {" + ", ".join(items) + "}\n"


def run_fbt(*args, cwd=None):
    return subprocess.run([FBT, *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def small_feedback(**kw):
    args = dict(num_tokens=50, dim=32, depth=2, heads=2, dim_head=16, mem_len=12, seed=3)
    args.update(kw)
    return fbt.FeedbackTransformer(**args)


def small_xl(**kw):
    args = dict(num_tokens=50, dim=32, depth=3, heads=2, dim_head=16, mem_len=12, seed=3)
    args.update(kw)
    return fbt.TransformerXL(**args)


class TempDir(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="fbt-python-")

    def tearDown(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def path(self, name):
        return os.path.join(self.dir, name)


class SeedSnippets(TempDir):
    """The seed's README, as written, with numpy in place of torch."""

    def test_readme_snippet(self):
        model = fbt.FeedbackTransformer(num_tokens=20000, dim=512, depth=6, seq_len=2, mem_len=256,
                                        dim_head=64, heads=8, attn_dropout=0.1, ff_dropout=0.1)
        x = np.random.randint(0, 20000, (2, 64))
        logits = model(x)
        self.assertEqual(logits.shape, (2, 64, 20000))
        self.assertEqual(logits.dtype, np.float32)
        logits, memory = model(x, return_memory=True)
        self.assertEqual(memory.shape, (2, 64, 512))
        logits, memory = model(x, memory=memory, return_memory=True)
        self.assertEqual(memory.shape, (2, 128, 512))
        self.assertTrue(np.isfinite(logits).all())

    def test_memory_carried_equals_one_call(self):
        # mem_len covers the whole text: two calls carrying the memory are one call of both halves.
        model = small_feedback(mem_len=32)
        x = np.random.default_rng(0).integers(0, 50, (3, 24))
        whole = model(x)
        first, memory = model(x[:, :10], return_memory=True)
        second = model(x[:, 10:], memory=memory)
        np.testing.assert_allclose(np.concatenate([first, second], axis=1), whole, rtol=1e-5, atol=1e-5)

    def test_train_and_eval_modes(self):
        model = small_feedback(attn_dropout=0.3, ff_dropout=0.3)
        x = np.arange(40).reshape(2, 20) % 50
        self.assertFalse(model.training)
        np.testing.assert_array_equal(model(x), model(x))  # eval: no dropout, deterministic
        self.assertIs(model.train(), model)
        self.assertTrue(model.training)
        self.assertFalse(np.array_equal(model(x), model(x)))  # dropout draws anew each call
        model.eval()
        np.testing.assert_array_equal(model(x), model.train(False)(x))

    def test_context_for_cross_attention(self):
        model = small_feedback(cross_attend=True)
        x = np.zeros((2, 5), dtype=np.int32)
        context = np.random.default_rng(1).standard_normal((2, 7, 32)).astype(np.float32)
        a = model(x, context=context)
        b = model(x, context=context * 2)
        self.assertEqual(a.shape, (2, 5, 50))
        self.assertFalse(np.allclose(a, b))  # the context is read
        with self.assertRaisesRegex(ValueError, "context"):
            model(x)

    def test_transformer_xl(self):
        model = small_xl()
        x = np.random.default_rng(2).integers(0, 50, (2, 20))
        logits, memory = model(x, return_memory=True)
        self.assertEqual(logits.shape, (2, 20, 50))
        self.assertEqual(memory.shape, (3, 2, 12, 32))  # (depth, B, mem_len, dim)
        self.assertEqual(model(x, memory=memory).shape, (2, 20, 50))
        self.assertIn("TransformerXL(", repr(model))
        self.assertEqual(model.config["type"], "transformer_xl")

    def test_adaptive_span(self):
        # The keywords, the spans in the state dict, the training term and the clamp (MODEL.md).
        model = fbt.FeedbackTransformer(num_tokens=50, dim=32, depth=2, heads=2, dim_head=16, mem_len=12,
                                        adapt_span=True, adapt_span_ramp=4, adapt_span_init=0.5)
        self.assertEqual(model.config["adapt_span_ramp"], 4)
        np.testing.assert_array_equal(model.state_dict()["layers.1.attn.span"], [0.5, 0.5])
        x = np.random.default_rng(4).integers(0, 50, (2, 9))
        loop = fbt.TrainLoop(model, lr=1.0, adapt_span_loss=1.0)
        stats = loop.step(x, x)
        self.assertAlmostEqual(stats["span_loss"], 1.0 * 12 * (0.5 + 0.5), places=5)
        self.assertEqual(float(model.state_dict()["layers.0.attn.span"].min()), 0.0)  # pulled in, clamped at 0
        with self.assertRaisesRegex(ValueError, "adapt_span_loss needs a model with adapt_span=True"):
            fbt.TrainLoop(small_feedback(), adapt_span_loss=1e-3)
        with self.assertRaisesRegex(ValueError, "adapt_span_init must be in \\[0, 1\\]"):
            fbt.FeedbackTransformer(num_tokens=5, dim=8, depth=1, mem_len=4, adapt_span=True, adapt_span_init=2.0)
        self.assertIn("adapt_span_ramp=32", fbt.TransformerXL.__doc__)

    def test_state_dict_save_and_load(self):
        model = small_feedback()
        sd = model.state_dict()
        self.assertIn("token_emb.weight", sd)
        self.assertIn("layers.0.attn.to_q.weight", sd)
        self.assertEqual(sd["token_emb.weight"].shape, (50, 32))
        self.assertEqual(sum(a.size for a in sd.values()), model.num_parameters)
        x = np.random.default_rng(3).integers(0, 50, (2, 9))
        path = self.path("model.safetensors")
        model.save(path)
        loaded = fbt.load(path)
        self.assertIsInstance(loaded, fbt.FeedbackTransformer)
        np.testing.assert_array_equal(loaded(x), model(x))
        # The arrays share the parameters' storage (as torch's do): writing one changes the model.
        sd["to_logits.bias"][:] = 5.0
        self.assertFalse(np.array_equal(loaded(x), model(x)))
        # load_state_dict sets them back from a copy.
        other = fbt.load(path)
        model.load_state_dict({k: v.copy() for k, v in other.state_dict().items()})
        np.testing.assert_array_equal(loaded(x), model(x))
        xl = small_xl()
        xl.save(self.path("xl.safetensors"))
        self.assertIsInstance(fbt.load(self.path("xl.safetensors")), fbt.TransformerXL)

    def test_to_device(self):
        model = small_feedback()
        if fbt.cuda_available():
            x = np.zeros((1, 4), dtype=np.int64)
            cpu = model(x)
            self.assertIs(model.to("cuda"), model)
            self.assertEqual(model.device, "cuda")
            np.testing.assert_allclose(model(x), cpu, rtol=1e-4, atol=1e-4)
        else:
            with self.assertRaisesRegex(RuntimeError, "not available"):
                model.to("cuda")
            self.assertEqual(model.device, "cpu")
        with self.assertRaisesRegex(ValueError, "cpu"):
            model.to("tpu")

    def test_generate(self):
        model = small_feedback()
        out = model.generate(np.array([1, 2, 3]), tokens=7, temperature=0)
        self.assertEqual(out.shape, (7,))
        np.testing.assert_array_equal(out, model.generate([1, 2, 3], tokens=7, temperature=0))
        # greedy: the first new token is the argmax after the prompt
        self.assertEqual(out[0], int(np.argmax(model(np.array([[1, 2, 3]]))[0, -1])))


class AgreesWithCommandLine(TempDir):
    """model(x) and loss_and_grads against `fbt forward` on the same weights and batch."""

    def check_family(self, model, memory_rows):
        rng = np.random.default_rng(5)
        B, T = 2, 9
        x = rng.integers(0, 50, (B, T)).astype(np.int32)
        y = rng.integers(0, 50, (B, T)).astype(np.int32)
        memory = rng.standard_normal(model.memory_shape(B, memory_rows)).astype(np.float32)
        model.save(self.path("w.safetensors"))
        with open(self.path("model.yaml"), "w") as f:
            f.write(model_yaml(model))
        write_safetensors(self.path("batch.safetensors"), {"inputs": x, "targets": y, "memory": memory})
        run_fbt("forward", "--config", self.path("model.yaml"), "--weights", self.path("w.safetensors"),
                "--batch", self.path("batch.safetensors"), "--out", self.path("out.safetensors"), "--grads")
        cli = read_safetensors(self.path("out.safetensors"))

        logits, after = model(x, memory=memory, return_memory=True)
        np.testing.assert_allclose(logits, cli["logits"], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(after, cli["memory"], rtol=1e-5, atol=1e-5)
        loss, grads, memory_grads = model.loss_and_grads(x, y, memory=memory)
        self.assertAlmostEqual(loss, float(cli["loss"]), places=5)
        self.assertEqual(set(grads), {k[len("grad."):] for k in cli if k.startswith("grad.")})
        for name, g in grads.items():
            np.testing.assert_allclose(g, cli["grad." + name], rtol=1e-4, atol=1e-6, err_msg=name)
        return x, y, memory, loss, memory_grads

    def test_feedback(self):
        model = small_feedback(seq_len=2)
        x, y, memory, loss, memory_grads = self.check_family(model, memory_rows=5)
        self.assertEqual(memory_grads.shape, (2, 9, 32))
        # The last vector written feeds no later position's loss; earlier ones do.
        self.assertEqual(np.abs(memory_grads[:, -1]).max(), 0.0)
        self.assertGreater(np.abs(memory_grads[:, 0]).max(), 0.0)

    def test_transformer_xl(self):
        _, _, _, _, memory_grads = self.check_family(small_xl(), memory_rows=4)
        self.assertEqual(memory_grads.shape, (3, 2, 9, 32))

    def test_parameter_gradients_by_central_differences(self):
        # The gradient dict against the loss it comes from, element by element (a name or a
        # transposition mixed up at the boundary would show).
        model = small_feedback(mem_len=20)
        rng = np.random.default_rng(7)
        x = rng.integers(0, 50, (1, 6))
        y = rng.integers(0, 50, (1, 6))
        y[0, 2] = -1  # no target at one position
        loss, grads, _ = model.loss_and_grads(x, y)
        sd = model.state_dict()
        eps = 1e-2
        for name, index in (("to_logits.bias", (int(y[0, 0]),)), ("to_logits.bias", (int(y[0, 3]),)),
                            ("layers.0.attn.to_q.weight", (1, 2)), ("layers.1.ff.w_in.weight", (3, 0))):
            base = sd[name][index]
            sd[name][index] = base + eps
            up = model.loss_and_grads(x, y)[0]
            sd[name][index] = base - eps
            down = model.loss_and_grads(x, y)[0]
            sd[name][index] = base
            self.assertAlmostEqual((up - down) / (2 * eps), grads[name][index], delta=2e-3, msg=name)


class Research(TempDir):
    """fbt.research against `fbt grads` on the same weights and batch."""

    def setUp(self):
        super().setUp()
        rng = np.random.default_rng(11)
        self.model = small_feedback(mem_len=16)
        self.x = rng.integers(0, 50, (2, 10)).astype(np.int32)
        self.y = rng.integers(0, 50, (2, 10)).astype(np.int32)
        self.model.save(self.path("w.safetensors"))
        with open(self.path("model.yaml"), "w") as f:
            f.write(model_yaml(self.model))
        write_safetensors(self.path("batch.safetensors"), {"inputs": self.x, "targets": self.y})

    def grads_cli(self, *args, model_yaml_path=None, weights=None):
        out = self.path("grads.jsonl")
        run_fbt("grads", "--config", model_yaml_path or self.path("model.yaml"), "--weights",
                weights or self.path("w.safetensors"), "--batch", self.path("batch.safetensors"), "--out", out,
                "--per-row", *args)
        with open(out) as f:
            return [json.loads(line) for line in f]

    def test_grad_by_lag(self):
        for detach in ("none", "horizon:3"):
            rows = self.grads_cli("--measure", "lag", "--detach", detach)
            ours = fbt.research.grad_by_lag(self.model, self.x, self.y, detach=detach)
            self.assertEqual(ours.shape, (9, 2))
            for r in rows:
                np.testing.assert_allclose(ours[r["lag"] - 1], r["rows"], rtol=1e-5, atol=1e-9)
        # all: no gradient through the memory at all
        self.assertEqual(fbt.research.grad_by_lag(self.model, self.x, self.y, detach="all").max(), 0.0)

    def test_memory_grads_of_the_last_position(self):
        # loss_and_grads with a target at the last position alone: its memory gradients are the
        # gradient by lag, row for row.
        y = np.full_like(self.y, -1)
        y[:, -1] = self.y[:, -1]
        _, _, memory_grads = self.model.loss_and_grads(self.x, y)
        by_lag = fbt.research.grad_by_lag(self.model, self.x, self.y)
        norms = np.linalg.norm(memory_grads[:, :-1], axis=2)  # (B, T-1), by call step u
        np.testing.assert_allclose(norms.T[::-1], by_lag, rtol=1e-5, atol=1e-9)

    def test_grad_by_lag_transformer_xl(self):
        xl = small_xl()
        xl.save(self.path("xl.safetensors"))
        with open(self.path("xl.yaml"), "w") as f:
            f.write(model_yaml(xl))
        rows = self.grads_cli("--measure", "lag", model_yaml_path=self.path("xl.yaml"),
                              weights=self.path("xl.safetensors"))
        ours = fbt.research.grad_by_lag(xl, self.x, self.y)
        self.assertEqual(ours.shape, (3, 9, 2))
        for r in rows:
            np.testing.assert_allclose(ours[r["layer"], r["lag"] - 1], r["rows"], rtol=1e-5, atol=1e-9)

    def test_truncation_bias(self):
        rows = self.grads_cli("--measure", "bias", "--policies", "horizon:2,every:4,all")
        ours = fbt.research.truncation_bias(self.model, self.x, self.y, policies=["horizon:2", "every:4", "all"])
        self.assertEqual(set(ours), {"horizon:2", "every:4", "all"})
        for r in rows:
            self.assertAlmostEqual(ours[r["policy"]][r["group"]]["rel_error"], r["rel_error"], places=6)
            self.assertAlmostEqual(ours[r["policy"]][r["group"]]["cosine"], r["cosine"], places=6)

    def test_jacobian_norms(self):
        rows = self.grads_cli("--measure", "jacobian", "--exact-jacobian")
        ours = fbt.research.jacobian_norms(self.model, self.x, exact=True)
        self.assertEqual(ours.shape, (9, 2))
        for r in rows:
            np.testing.assert_allclose(ours[r["k"] - 1], r["rows"], rtol=1e-5, atol=1e-9)
        mix = fbt.research.layer_mix(self.model)
        self.assertEqual(mix.shape, (3,))
        self.assertAlmostEqual(float(mix.sum()), 1.0, places=6)


class Training(TempDir):
    def write_run(self, model, train):
        """A byte corpus (data/) and run.yaml with these model: and train: sections, in the test's folder."""
        with open(self.path("text.txt"), "w") as f:
            for i in range(300):
                f.write(f"And God said, Let there be light: and there was light. {i}\n")
        run_fbt("prepare-bytes", "text.txt", "data", cwd=self.dir)
        with open(self.path("run.yaml"), "w") as f:
            f.write(f"model: {{num_tokens: 256, {model}}}\n"
                    "data: {format: bytes, train: data/train.bin, valid: data/valid.bin}\n"
                    f"train: {{sample_tokens: 0, threads: 1, out_dir: run, {train}}}\n")

    def test_train_from_a_config(self):
        self.write_run("dim: 32, depth: 2, heads: 2, dim_head: 16, mem_len: 16",
                       "batch_size: 4, bptt: 16, steps: 1000, eval_every: 20, log_every: 10, lr: 3e-3, checkpoint_every: 20")
        cwd = os.getcwd()
        os.chdir(self.dir)
        try:
            model = fbt.train("run.yaml", overrides={"train.steps": 40, "train.warmup": 5})
            self.assertIsInstance(model, fbt.FeedbackTransformer)
            with open("run/metrics.jsonl") as f:
                lines = [json.loads(line) for line in f]
            train_losses = [r["loss"] for r in lines if r.get("split") == "train"]
            self.assertLess(train_losses[-1], train_losses[0])
            self.assertEqual(max(r["step"] for r in lines), 40)
            # stop_at ends early with a checkpoint; resume continues to the end.
            early = fbt.train("run.yaml", overrides={"train.steps": 60, "train.out_dir": "run2"}, stop_at=20)
            self.assertIsInstance(early, fbt.FeedbackTransformer)
            done = fbt.train("run.yaml", overrides={"train.steps": 60, "train.out_dir": "run2"}, resume=True)
            self.assertTrue(os.path.exists("run2/model.safetensors"))
            np.testing.assert_array_equal(done.state_dict()["to_logits.bias"],
                                          fbt.load("run2").state_dict()["to_logits.bias"])
        finally:
            os.chdir(cwd)

    def test_log_and_callback(self):
        """The log goes through sys.stdout (redirect_stdout sees it, without terminal codes); the
        callback gets every metrics record as written; its exception stops the run with a checkpoint."""
        import contextlib
        import io
        self.write_run("dim: 32, depth: 1, heads: 2, dim_head: 16, mem_len: 8",
                       "batch_size: 4, bptt: 8, steps: 20, eval_every: 10, log_every: 5, checkpoint_every: 5")
        cwd = os.getcwd()
        os.chdir(self.dir)
        try:
            out, records = io.StringIO(), []
            with contextlib.redirect_stdout(out):
                fbt.train("run.yaml", callback=records.append)
            log = out.getvalue()
            self.assertIn("step     20/20 | loss", log)
            self.assertIn("final weights: run/model.safetensors", log)
            self.assertNotIn("\x1b", log)
            self.assertNotIn("\r", log)
            with open("run/metrics.jsonl") as f:
                self.assertEqual(records, [json.loads(line) for line in f])
            self.assertEqual([(r["split"], r["step"]) for r in records],
                             [("train", 5), ("train", 10), ("valid", 10), ("train", 15), ("train", 20), ("valid", 20)])

            class Enough(Exception):
                pass

            def stop_at_ten(record):
                if record["step"] == 10:
                    raise Enough("seen enough")

            out = io.StringIO()
            with contextlib.redirect_stdout(out), self.assertRaisesRegex(Enough, "seen enough"):
                fbt.train("run.yaml", overrides={"train.out_dir": "run2"}, callback=stop_at_ten)
            self.assertIn("stopped at step 10 of 20 (interrupted); continue with: fbt.train('run.yaml', "
                          "overrides={'train.out_dir': 'run2'}, resume=True)", out.getvalue())
            self.assertTrue(os.path.exists("run2/checkpoints/step_00000010/DONE"))
            with contextlib.redirect_stdout(io.StringIO()):
                fbt.train("run.yaml", overrides={"train.out_dir": "run2"}, resume=True)
            with open("run/model.safetensors", "rb") as a, open("run2/model.safetensors", "rb") as b:
                self.assertEqual(a.read(), b.read())  # stopped by the callback and resumed: the same run
            with self.assertRaisesRegex(TypeError, "callback must be callable"):
                fbt.train("run.yaml", overrides={"train.out_dir": "run3"}, callback=3)
        finally:
            os.chdir(cwd)

    def test_train_loop(self):
        text = np.frombuffer(b"In the beginning God created the heaven and the earth. " * 40, dtype=np.uint8)
        model = small_feedback(num_tokens=256)
        loop = fbt.TrainLoop(model, lr=3e-3, warmup=5, total_steps=40, schedule="cosine", min_lr=3e-4)
        self.assertIsNone(loop.memory)
        B, T = 4, 16
        stream = len(text) // B
        losses = []
        for step in range(40):
            pos = (step * T) % (stream - T - 1)
            rows = [text[b * stream + pos: b * stream + pos + T + 1] for b in range(B)]
            batch = np.stack(rows).astype(np.int64)
            stats = loop.step(batch[:, :-1], batch[:, 1:])
            self.assertFalse(stats["skipped"])
            losses.append(stats["loss"])
        self.assertEqual(loop.steps_done, 40)
        self.assertEqual(loop.memory.shape, (4, 12, 32))
        self.assertLess(np.mean(losses[-5:]), np.mean(losses[:5]) - 1.0)
        loop.reset_memory()
        self.assertIsNone(loop.memory)
        # Micro-batches: the same step within float rounding, the memory of every row kept.
        one, two = small_feedback(num_tokens=256), small_feedback(num_tokens=256)
        a = fbt.TrainLoop(one).step(batch[:, :-1], batch[:, 1:])
        split = fbt.TrainLoop(two, grad_accum=2)
        b = split.step(batch[:, :-1], batch[:, 1:])
        self.assertAlmostEqual(a["loss"], b["loss"], places=5)
        self.assertAlmostEqual(a["grad_norm"], b["grad_norm"], places=4)
        self.assertEqual(split.memory.shape, (4, 12, 32))
        with self.assertRaisesRegex(ValueError, "grad_accum 2"):
            fbt.TrainLoop(small_feedback(num_tokens=256), grad_accum=2).step(batch[:3, :-1], batch[:3, 1:])
        # Recomputing the windows in the backward: the same numbers, bit for bit.
        kept, again = small_feedback(num_tokens=256), small_feedback(num_tokens=256)
        a = fbt.TrainLoop(kept).step(batch[:, :-1], batch[:, 1:])
        b = fbt.TrainLoop(again, recompute=True).step(batch[:, :-1], batch[:, 1:])
        self.assertEqual((a["loss"], a["grad_norm"]), (b["loss"], b["grad_norm"]))
        for name, value in kept.state_dict().items():
            np.testing.assert_array_equal(value, again.state_dict()[name])


class Errors(TempDir):
    """C++ errors arrive as Python exceptions with the library's one-line message."""

    def test_arrays(self):
        model = small_feedback()
        with self.assertRaisesRegex(TypeError, "x must hold integer token ids, got dtype float64"):
            model(np.zeros((2, 3)))
        with self.assertRaisesRegex(ValueError, r"x must be \(batch, time\), got shape \(5,\)"):
            model(np.zeros(5, dtype=np.int64))
        with self.assertRaisesRegex(ValueError, r"x\[1, 2\] = 50 is outside \[0, num_tokens=50\)"):
            model(np.array([[0, 0, 0], [0, 0, 50]]))
        with self.assertRaisesRegex(ValueError, r"memory must be \(batch=2, rows <= mem_len=12, dim=32\), got shape"):
            model(np.zeros((2, 3), dtype=np.int32), memory=np.zeros((2, 13, 32), dtype=np.float32))
        with self.assertRaisesRegex(TypeError, "memory must be a floating-point array"):
            model(np.zeros((2, 3), dtype=np.int32), memory=np.zeros((2, 3, 32), dtype=np.int32))
        with self.assertRaisesRegex(ValueError, r"y has shape \(2, 4\), the inputs \(2, 3\)"):
            model.loss_and_grads(np.zeros((2, 3), dtype=np.int32), np.zeros((2, 4), dtype=np.int32))
        with self.assertRaisesRegex(ValueError, "detach: "):
            model.loss_and_grads(np.zeros((2, 3), dtype=np.int32), np.zeros((2, 3), dtype=np.int32), detach="often")

    def test_configs(self):
        with self.assertRaisesRegex(TypeError, "unexpected keyword argument 'depht'"):
            fbt.FeedbackTransformer(num_tokens=10, dim=8, depht=2, mem_len=4)
        with self.assertRaisesRegex(TypeError, "missing required keyword argument 'mem_len'"):
            fbt.FeedbackTransformer(num_tokens=10, dim=8, depth=2)
        with self.assertRaisesRegex(TypeError, "dim must be an int, got str"):
            fbt.FeedbackTransformer(num_tokens=10, dim="8", depth=2, mem_len=4)
        with self.assertRaisesRegex(ValueError, "dim"):
            fbt.FeedbackTransformer(num_tokens=10, dim=0, depth=2, mem_len=4)
        with self.assertRaisesRegex(TypeError, "unexpected keyword argument 'seq_len'"):
            fbt.TransformerXL(num_tokens=10, dim=8, depth=2, mem_len=4, seq_len=2)
        with self.assertRaisesRegex(TypeError, "keyword arguments only"):
            fbt.FeedbackTransformer(10, 8, 2, 4)
        with self.assertRaisesRegex(ValueError, "'xavier' is not one of gpt2, torch"):
            fbt.FeedbackTransformer(num_tokens=10, dim=8, depth=2, mem_len=4, init="xavier")
        # train.init's schemes: torch.nn.Embedding's normal(0, 1) against gpt2's 0.02
        wide = dict(num_tokens=200, dim=64, depth=1, mem_len=4)
        self.assertAlmostEqual(fbt.TransformerXL(init="torch", **wide).state_dict()["token_emb.weight"].std(), 1.0, delta=0.05)
        self.assertAlmostEqual(fbt.TransformerXL(**wide).state_dict()["token_emb.weight"].std(), 0.02, delta=0.002)
        model = small_feedback()
        sd = {k: v.copy() for k, v in model.state_dict().items()}
        del sd["token_emb.weight"]
        with self.assertRaisesRegex(ValueError, "state_dict: missing tensor 'token_emb.weight'"):
            model.load_state_dict(sd)

    def test_hostile_settings(self):
        # The optimizer's ranges are the config reader's (train/config: optimizer_setting_error), NaN out of all
        model = small_feedback()
        for kw, msg in [(dict(lr=float("nan")), "lr: must be > 0"), (dict(lr=-1.0), "lr: must be > 0"),
                        (dict(clip=float("nan")), "clip: must be >= 0"), (dict(betas=(2.0, 0.9)), "betas: must be in"),
                        (dict(eps=0.0), "eps: must be > 0"), (dict(weight_decay=float("inf")), "weight_decay: must be >= 0"),
                        (dict(warmup=-5), "warmup: must be >= 0"), (dict(min_lr=1.0), r"min_lr: must be in \[0, lr\]")]:
            with self.assertRaisesRegex(ValueError, msg):
                fbt.TrainLoop(model, **kw)
        # A model too large for memory, or with sizes that would overflow, is an error, never a crash
        with self.assertRaisesRegex(MemoryError, "out of memory: .* for the model's [0-9]+ parameters and their "
                                                 r"gradients; choose a smaller model \(model.dim"):
            fbt.FeedbackTransformer(num_tokens=16, dim=2 ** 16, depth=2 ** 10, heads=2, dim_head=8, mem_len=4)
        with self.assertRaisesRegex(ValueError, "dim must be <= 1048576"):
            fbt.FeedbackTransformer(num_tokens=16, dim=2 ** 40, depth=1, heads=2, dim_head=8, mem_len=4)
        with self.assertRaisesRegex(ValueError, "num_tokens must be <= 2147483647"):
            fbt.TransformerXL(num_tokens=2 ** 33, dim=8, depth=1, mem_len=4)

    def test_files(self):
        with self.assertRaisesRegex(FileNotFoundError, "nowhere.safetensors: no such file"):
            fbt.load(self.path("nowhere.safetensors"))
        model = small_feedback()
        path = self.path("m.safetensors")
        model.save(path)
        with open(path, "r+b") as f:  # a flipped bit in the data
            f.seek(-5, os.SEEK_END)
            byte = f.read(1)
            f.seek(-5, os.SEEK_END)
            f.write(bytes([byte[0] ^ 1]))
        with self.assertRaisesRegex(OSError, "checksum mismatch"):
            fbt.load(path)
        with self.assertRaisesRegex(OSError, "cannot write"):
            model.save(self.path("no/such/dir/m.safetensors"))
        with open(self.path("bad.yaml"), "w") as f:
            f.write("model: {num_tokens: 256, dim: 32, depth: 2, mem_len: 16}\n"
                    "data: {format: bytes, train: x.bin, valid: x.bin}\ntrain: {stepz: 3}\n")
        with self.assertRaisesRegex(ValueError, "stepz"):
            fbt.train(self.path("bad.yaml"))
        with self.assertRaisesRegex(TypeError, "overrides"):
            fbt.train(self.path("bad.yaml"), overrides={"train.steps": [1]})


if __name__ == "__main__":
    unittest.main()
