"""Tests for tools/trainer/checkpoint.py: orbax checkpoints, Haiku names."""

import doctest
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import optax
import orbax.checkpoint as ocp

from configs import smoke
import pax_haiku as pax
from tools.trainer import checkpoint
from tools.trainer import checkpoint_legacy
from tools.trainer import checkpoint_manifest
from tools.trainer import checkpoint_names
from tools.trainer import data as data_lib
from tools.trainer import models
from tools.trainer import train_lib
import launch  # tests/launch.py, beside this file
import quick_exit  # tests/quick_exit.py, beside this file

# Shared by this test and the child process it SIGKILLs: the tree saved at
# `step` is a pure function of `step`, so any restored checkpoint can be
# checked bit for bit.
_MAKE_TREE_SRC = '''
import numpy as np
import ml_dtypes

def make_tree(step, big=5_000_000):
  return {
      "model": {"w": np.arange(big, dtype=np.float32) + np.float32(step),
                "b": np.full((3, 4), step, np.int32)},
      "optimizer": [np.asarray(step, np.int64),
                    np.full((7,), step / 8, ml_dtypes.bfloat16)],
  }
'''
_NS = {}
exec(_MAKE_TREE_SRC, _NS)  # pylint: disable=exec-used
make_tree = _NS["make_tree"]

# A "zygote" process imports everything once, then forks one writer per
# command; each writer restores the latest checkpoint (as a trainer would) and
# saves ~20 MB checkpoints in a loop until the test SIGKILLs it. Forking from
# the zygote keeps the 1-2 s import of jax out of every kill.
_ZYGOTE_SRC = _MAKE_TREE_SRC + '''
import os, signal, sys
from tools.trainer import checkpoint
signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps writers
directory = sys.argv[1]
print("ready", flush=True)
for command in sys.stdin:
  if command.strip() == "sync":
    print("sync", flush=True)
    continue
  pid = os.fork()
  if pid:
    print("pid", pid, flush=True)
    continue
  restored = checkpoint.restore_latest(directory, like=make_tree(0))
  step = 0 if restored is None else restored.step
  while True:
    step += 1
    checkpoint.save(directory, step, make_tree(step), {"step": step}, keep=2)
    print("saved", step, flush=True)
# The test closed stdin: done. Exits without freeing jax's modules one by
# one (~1 s of CPU); its writers are gone and its output is flushed.
os._exit(0)
'''


def _assert_trees_equal(test, got, want):
  got_leaves, got_def = jax.tree_util.tree_flatten(got)
  want_leaves, want_def = jax.tree_util.tree_flatten(want)
  test.assertEqual(got_def, want_def)
  for g, w in zip(got_leaves, want_leaves):
    w = np.asarray(w)
    test.assertEqual((g.shape, g.dtype), (w.shape, w.dtype))
    np.testing.assert_array_equal(np.atleast_1d(g).view(np.uint8),
                                  np.atleast_1d(w).view(np.uint8))


class DocstringTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ("checkpoint", checkpoint), ("checkpoint_names", checkpoint_names),
      ("checkpoint_manifest", checkpoint_manifest))
  def test_examples(self, module):
    result = doctest.testmod(
        module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    self.assertGreater(result.attempted, 0)
    self.assertEqual(result.failed, 0, "see the doctest output above")


def _model_and_optimizer(hidden=8, seed=0):
  pax.seed_rng_key(seed)
  model = pax.Sequential(pax.Linear(4, hidden), jax.nn.relu,
                         pax.BatchNorm1D(hidden), pax.Linear(hidden, 3))
  optimizer = pax.from_optax(optax.chain(optax.clip_by_global_norm(1.0),
                                         optax.adam(1e-2)))(model.parameters())
  return model, optimizer


def _train_steps(model, optimizer, n=3):
  def loss_fn(model, x):
    model, y = pax.purecall(model, x)
    loss = jnp.mean(y ** 2)
    return loss, (loss, model)

  update = jax.jit(pax.build_update_fn(loss_fn))
  x = jnp.asarray(np.random.default_rng(0).normal(size=(16, 2, 4)), jnp.float32)
  for _ in range(n):
    model, optimizer, _ = update(model, optimizer, x)
  return model, optimizer


class CheckpointTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.dir = self.create_tempdir().full_path

  def _save_steps(self, steps, keep=None):
    for step in steps:
      checkpoint.save(self.dir, step, make_tree(step, big=10),
                      {"step": step, "data": {"epoch": step, "index": 0}},
                      keep=keep)

  def test_round_trip_is_exact(self):
    tree = {"f32": jnp.linspace(0, 1, 5), "bf16": jnp.ones(3, jnp.bfloat16),
            "bool": np.array([True, False]), "i8": np.int8(-3),
            "c64": np.array([1 + 2j], np.complex64),
            "nested": [np.float64(np.pi), (np.arange(4, dtype=np.uint16),)]}
    meta = {"step": 5, "rng": [1, 2], "config_hash": "abc", "loss": 0.5}
    path = checkpoint.save(self.dir, 5, tree, meta)
    self.assertEqual(path, os.path.join(self.dir, "5"))
    restored = checkpoint.restore_latest(self.dir, like=tree)
    self.assertEqual((restored.step, restored.metadata), (5, meta))
    _assert_trees_equal(self, restored.tree, tree)
    self.assertEqual(restored.tree["bf16"].dtype, ml_dtypes.bfloat16)
    self.assertLen(restored.leaves, len(jax.tree_util.tree_leaves(tree)))

  def test_like_can_be_abstract_or_a_leaf_list(self):
    tree = make_tree(3, big=10)
    checkpoint.save(self.dir, 3, tree)
    abstract = jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype), tree)
    _assert_trees_equal(
        self, checkpoint.restore_latest(self.dir, abstract).tree, tree)
    directory = self.create_tempdir().full_path
    leaves = jax.tree_util.tree_leaves(tree)
    checkpoint.save(directory, 3, leaves)
    restored = checkpoint.restore_latest(directory, leaves)
    _assert_trees_equal(self, restored.leaves, leaves)

  def test_latest_step_and_keep(self):
    self.assertIsNone(checkpoint.latest_step(self.dir))
    self.assertIsNone(checkpoint.latest_step(os.path.join(self.dir, "no")))
    self.assertIsNone(checkpoint.restore_latest(self.dir, make_tree(0, 10)))
    self._save_steps([1, 2, 10, 20], keep=3)
    self.assertEqual(checkpoint.checkpoint_steps(self.dir), [2, 10, 20])
    self.assertEqual(checkpoint.latest_step(self.dir), 20)
    self.assertEqual(checkpoint.latest_step(self.dir, verify_integrity=True),
                     20)
    self.assertEqual(sorted(os.listdir(self.dir)), ["10", "2", "20"])
    self.assertEqual(checkpoint.restore(self.dir, 10, make_tree(0, 10))
                     .metadata["data"], {"epoch": 10, "index": 0})

  @parameterized.named_parameters(
      ("truncated_arrays", "array", lambda b: b[:len(b) // 2]),
      ("flipped_byte", "array",
       lambda b: b[:len(b) // 2] + bytes([b[len(b) // 2] ^ 1]) +
       b[len(b) // 2 + 1:]),
      ("empty_arrays", "array", lambda b: b""),
      ("missing_arrays", "array", None),
      ("missing_manifest", checkpoint.MANIFEST_FILE, None),
      ("truncated_manifest", checkpoint.MANIFEST_FILE, lambda b: b[:-20]),
      ("edited_manifest", checkpoint.MANIFEST_FILE,
       lambda b: b.replace(b'"step": 3', b'"step": 4')),
      ("edited_metadata", "meta/metadata", lambda b: b.replace(b"3", b"4")),
      ("missing_orbax_metadata", "arrays/_METADATA", None),
  )
  def test_damaged_checkpoint_falls_back_to_previous(self, name, damage):
    self._save_steps([1, 2, 3])
    step_dir = os.path.join(self.dir, "3")
    path = (checkpoint.array_files(step_dir)[0] if name == "array"
            else os.path.join(step_dir, name))
    if damage is None:
      os.remove(path)
    else:
      with open(path, "rb") as f:
        content = f.read()
      with open(path, "wb") as f:
        f.write(damage(content))
    self.assertEqual(checkpoint.latest_step(self.dir, verify_integrity=True),
                     2)
    with self.assertLogs(level="WARNING") as logs:
      restored = checkpoint.restore_latest(self.dir, make_tree(0, big=10))
    self.assertEqual(restored.step, 2)
    _assert_trees_equal(self, restored.tree, make_tree(2, big=10))
    self.assertIn("Skipping damaged checkpoint", logs.output[0])
    self.assertIn(step_dir, logs.output[0])
    with self.assertRaises(checkpoint.CheckpointError):
      checkpoint.restore(self.dir, 3, make_tree(0, big=10))

  def test_all_damaged_is_an_error_not_a_fresh_start(self):
    self._save_steps([1])
    os.remove(checkpoint.array_files(os.path.join(self.dir, "1"))[0])
    with self.assertLogs(level="WARNING"):
      with self.assertRaisesRegex(checkpoint.CheckpointError,
                                  "All 1 checkpoints .* are damaged"):
        checkpoint.restore_latest(self.dir, make_tree(0, big=10))

  def test_only_unfinished_saves_start_afresh(self):
    # A run killed in its first save, after orbax's commit and before the
    # manifest, has no finished work: resuming starts from scratch.
    self._save_steps([1, 2])
    for step in ("1", "2"):
      os.remove(os.path.join(self.dir, step, checkpoint.MANIFEST_FILE))
    with self.assertRaises(checkpoint.UnfinishedCheckpointError):
      checkpoint.verify(self.dir, 2)
    with self.assertLogs(level="WARNING") as logs:
      self.assertIsNone(
          checkpoint.restore_latest(self.dir, make_tree(0, big=10)))
    self.assertIn("save of step(s) 1, 2 was interrupted", logs.output[-1])
    # Saving the step again replaces the unfinished one.
    checkpoint.save(self.dir, 1, make_tree(1, big=10))
    restored = checkpoint.restore_latest(self.dir, make_tree(0, big=10))
    self.assertEqual(restored.step, 1)
    _assert_trees_equal(self, restored.tree, make_tree(1, big=10))

  def test_damage_beside_unfinished_saves_is_still_an_error(self):
    self._save_steps([1, 2])
    os.remove(checkpoint.array_files(os.path.join(self.dir, "1"))[0])
    os.remove(os.path.join(self.dir, "2", checkpoint.MANIFEST_FILE))
    with self.assertLogs(level="WARNING"):
      with self.assertRaisesRegex(checkpoint.CheckpointError,
                                  "All 2 checkpoints .* are damaged"):
        checkpoint.restore_latest(self.dir, make_tree(0, big=10))

  def test_mismatch_names_first_leaf_and_does_not_fall_back(self):
    self._save_steps([1, 2])
    other = make_tree(0, big=10)
    other["model"]["b"] = np.zeros((3, 5), np.int32)
    with self.assertRaisesRegex(
        ValueError, r"2 does not match .* leaf 0 \(model/b\)"
        r": the checkpoint has shape \(3, 4\) dtype int32 but expected shape "
        r"\(3, 5\) dtype int32.*different model"):
      checkpoint.restore_latest(self.dir, other)
    other = make_tree(0, big=10)
    other["model"]["w"] = other["model"]["w"].astype(np.float16)
    with self.assertRaisesRegex(ValueError, r"model/w.*float16"):
      checkpoint.restore_latest(self.dir, other)

  def test_other_model_names_first_haiku_path_and_shape(self):
    model, optimizer = _model_and_optimizer(hidden=8)
    checkpoint.save(self.dir, 1, {"model": model, "optimizer": optimizer})
    model, optimizer = _model_and_optimizer(hidden=16)
    with self.assertRaisesRegex(
        ValueError, r"at leaf 0 \(model/params/sequential/~/linear/b\): the "
        r"checkpoint has shape \(8,\) dtype float32 but expected shape "
        r"\(16,\)"):
      checkpoint.restore_latest(self.dir, {"model": model,
                                           "optimizer": optimizer})

  def test_leaf_count_mismatch(self):
    self._save_steps([1])
    fewer = make_tree(0, big=10)
    del fewer["optimizer"]
    with self.assertRaisesRegex(ValueError, r"has 4 leaves but 2 are expected"
                                r".*first extra one is optimizer/0"):
      checkpoint.restore_latest(self.dir, fewer)
    more = make_tree(0, big=10)
    more["optimizer"].append(np.zeros(2))
    with self.assertRaisesRegex(
        ValueError, r"has 4 leaves but 5.*first missing one is leaf 4 "
        r"\(optimizer/2"):
      checkpoint.restore_latest(self.dir, more)

  def test_restores_by_name_not_position(self):
    # The same Haiku names in another attribute order: a later version of
    # the model code.
    class First(pax.Module):

      def __init__(self):
        super().__init__(name="net")
        self.encoder = pax.Linear(2, 3, name="enc")
        self.decoder = pax.Linear(3, 2, name="dec")

    class Reordered(pax.Module):

      def __init__(self):
        super().__init__(name="net")
        self.decoder = pax.Linear(3, 2, name="dec")
        self.encoder = pax.Linear(2, 3, name="enc")

    saved = First()
    checkpoint.save(self.dir, 1, {"model": saved})
    restored = checkpoint.restore_latest(self.dir, {"model": Reordered()})
    got = restored.tree["model"]
    np.testing.assert_array_equal(got.encoder.weight, saved.encoder.weight)
    np.testing.assert_array_equal(got.decoder.weight, saved.decoder.weight)

  def test_haiku_names_and_optimizer_fields(self):
    model, optimizer = _train_steps(*_model_and_optimizer())
    checkpoint.save(self.dir, 7, {"model": model, "optimizer": optimizer})
    arrays = checkpoint.load_arrays(self.dir, 7)
    for bundle, inner in model.params.items():
      for name, value in inner.items():
        np.testing.assert_array_equal(
            arrays[f"model/params/{bundle}/{name}"], value)
    for bundle, inner in model.state.items():
      for name, value in inner.items():
        np.testing.assert_array_equal(
            arrays[f"model/state/{bundle}/{name}"], value)
    adam = optimizer.opt_state[1][0]  # chain(clip, adam): adam's first state.
    self.assertEqual(int(arrays["optimizer/1/0/count"]), 3)
    for bundle, inner in adam.mu.params.items():
      for name, value in inner.items():
        np.testing.assert_array_equal(
            arrays[f"optimizer/1/0/mu/{bundle}/{name}"], value)
        np.testing.assert_array_equal(
            arrays[f"optimizer/1/0/nu/{bundle}/{name}"],
            adam.nu.params[bundle][name])

  def test_restored_model_and_optimizer_continue_identically(self):
    model, optimizer = _train_steps(*_model_and_optimizer())
    checkpoint.save(self.dir, 3, {"model": model, "optimizer": optimizer})
    fresh = dict(zip(("model", "optimizer"), _model_and_optimizer(seed=1)))
    restored = checkpoint.restore_latest(self.dir, fresh).tree
    want = _train_steps(model, optimizer, n=2)
    got = _train_steps(restored["model"], restored["optimizer"], n=2)
    # (The treedefs differ only in the optax function objects.)
    _assert_trees_equal(self, jax.tree_util.tree_leaves(got),
                        jax.tree_util.tree_leaves(want))

  def test_crash_before_commit_leaves_previous_checkpoint(self):
    self._save_steps([1])
    # A process killed before orbax's rename leaves its temporary directory:
    tmp = os.path.join(self.dir, "2.orbax-checkpoint-tmp-1234567")
    os.makedirs(os.path.join(tmp, "arrays"))
    self.assertEqual(checkpoint.restore_latest(
        self.dir, make_tree(0, big=10)).step, 1)
    self._save_steps([2])
    self.assertEqual(sorted(os.listdir(self.dir)), ["1", "2"])

  def test_resave_same_step_replaces(self):
    checkpoint.save(self.dir, 4, make_tree(1, big=10), {"v": 1})
    checkpoint.save(self.dir, 4, make_tree(2, big=10), {"v": 2})
    restored = checkpoint.restore_latest(self.dir, make_tree(0, big=10))
    self.assertEqual((restored.step, restored.metadata), (4, {"v": 2}))
    _assert_trees_equal(self, restored.tree, make_tree(2, big=10))
    self.assertEqual(os.listdir(self.dir), ["4"])

  def test_newer_checkpoints_of_an_abandoned_run_are_set_aside(self):
    self._save_steps([1, 2, 3], keep=2)
    with self.assertLogs(level="WARNING"):
      self._save_steps([2], keep=2)
    self.assertEqual(checkpoint.checkpoint_steps(self.dir), [2])
    self.assertIn("abandoned_step_3", os.listdir(self.dir))
    self.assertEqual(checkpoint.latest_step(self.dir), 2)

  def test_async_manager_writes_manifest_on_next_save_and_close(self):
    manager = checkpoint.CheckpointManager(self.dir, keep=2, async_save=True)
    for step in (1, 2, 3):
      manager.save(step, make_tree(step, big=10), {"step": step})
    manager.close()
    self.assertEqual(checkpoint.checkpoint_steps(self.dir), [2, 3])
    for step in (2, 3):
      checkpoint.verify(self.dir, step)
    _assert_trees_equal(
        self, checkpoint.restore_latest(self.dir, make_tree(0, 10)).tree,
        make_tree(3, 10))

  def test_old_format_is_a_clear_error_with_the_conversion_command(self):
    os.makedirs(os.path.join(self.dir, "ckpt_20"))
    with open(os.path.join(self.dir, "ckpt_20", "metadata.json"), "w") as f:
      f.write("{}")
    with self.assertRaisesRegex(
        ValueError, r"(?s)old format \(ckpt_20/arrays\.npz.*python3 "
        r"tools/convert_checkpoint\.py --config=CONFIG --workdir="):
      checkpoint.restore_latest(self.dir, make_tree(0, 10))

  def test_bad_inputs(self):
    with self.assertRaisesRegex(TypeError, "JSON-serialisable"):
      checkpoint.save(self.dir, 1, [np.zeros(2)], {"x": np.float32(1)})
    with self.assertRaisesRegex(TypeError, "key_data"):
      checkpoint.save(self.dir, 1, [jax.random.key(0)])
    with self.assertRaisesRegex(TypeError, "cannot store"):
      checkpoint.save(self.dir, 1, [np.array(["a"], dtype=object)])
    with self.assertRaisesRegex(ValueError, "no elements"):
      checkpoint.save(self.dir, 1, [np.zeros((0, 2))])
    with self.assertRaisesRegex(ValueError, "non-negative int"):
      checkpoint.save(self.dir, -1, [np.zeros(2)])
    with self.assertRaisesRegex(ValueError, "keep must be a positive int"):
      checkpoint.CheckpointManager(self.dir, keep=0)
    self.assertEqual(os.listdir(self.dir), [])


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Opens a checkpoint of the binary with orbax and plain Haiku only (no
# pax_haiku import) and prints the test accuracy of the model it holds:
# configs/smoke.py's MLP, written as the Haiku module it is named after.
_PLAIN_RESTORE_SRC = """
import json, sys
import haiku as hk
import jax
import numpy as np
import orbax.checkpoint as ocp
from tools.trainer import data

tree = ocp.StandardCheckpointer().restore(sys.argv[1] + "/arrays")
params, state = tree["model"]["params"], tree["model"]["state"]

class Sequential(hk.Module):
  def __init__(self):
    super().__init__()
    # Created in __init__: named sequential/~/linear, sequential/~/linear_1.
    self.hidden, self.output = hk.Linear(32), hk.Linear(10)

  def __call__(self, x):
    x = x.reshape(x.shape[0], -1)
    return self.output(jax.nn.relu(self.hidden(x)))

forward = hk.transform_with_state(lambda x: Sequential()(x))
images, labels = data.load_digits().test
logits, _ = forward.apply(params, state, None, images)
print(json.dumps({
    "accuracy": float(np.mean(np.argmax(logits, -1) == labels)),
    "pax_haiku_imported": any(m.startswith("pax_haiku") for m in sys.modules),
}))
"""


def run_tool(argv):
  """A `python3 tools/...` command line, run from the repository root.

  The tool runs as a process of its own, forked from a server that imported
  the trainer once (tests/launch.py), with this test's interpreter.
  """
  if argv[0] != "python3":
    raise ValueError(f"not a python3 command line: {argv}")
  return launch.run([sys.executable, *argv[1:]], cwd=ROOT,
                    capture_output=True, text=True, timeout=300,
                    env=dict(os.environ, PYTHONPATH=ROOT))


class BinaryCheckpointTest(absltest.TestCase):
  """The binary's checkpoints opened without the binary, and conversion."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.workdir = tempfile.mkdtemp(dir=absltest.get_default_test_tmpdir())
    cls.config = smoke.get_config()
    cls.config.num_steps = 40
    cls.result = train_lib.train_and_evaluate(cls.config, cls.workdir)

  def test_plain_orbax_and_haiku_reproduce_the_reported_accuracy(self):
    proc = subprocess.run(
        [sys.executable, "-c", _PLAIN_RESTORE_SRC, self.result["checkpoint"]],
        capture_output=True, text=True, timeout=300, cwd=ROOT, check=False,
        env=dict(os.environ, PYTHONPATH=ROOT))
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    self.assertFalse(out["pax_haiku_imported"])
    self.assertAlmostEqual(out["accuracy"], self.result["accuracy"], places=6)
    self.assertGreater(out["accuracy"], 0.5)  # Trained (chance is 0.1).

  def test_a_pax_module_loads_the_haiku_dicts(self):
    # The documented two lines (docs/checkpoints.md).
    tree = ocp.StandardCheckpointer().restore(
        os.path.join(self.result["checkpoint"], "arrays"))
    model = models.build_model(self.config).update_parameters(
        tree["model"]["params"]).update_state(tree["model"]["state"])
    images, labels = data_lib.load_digits().test
    logits = model.eval()(images)
    accuracy = float(np.mean(np.argmax(logits, -1) == labels))
    self.assertAlmostEqual(accuracy, self.result["accuracy"], places=6)

  def test_old_format_before_the_grad_norm_metric_converts_and_resumes(self):
    # Checkpoints of the previous release: the optimizer chain had no
    # `record_grad_norm` state yet.
    workdir = self.create_tempdir().full_path
    ckpt_dir = os.path.join(workdir, "checkpoints")
    config = smoke.get_config()
    config.num_steps = 20
    model = models.build_model(config)
    old_optimizer = pax.from_optax(models.make_optimizer(
        config, record_norm=False))(model.parameters())
    # The previous release's batcher position after 10 steps.
    data_state = {"epoch": 0, "index": 10, "seed": 0, "batch_size": 32}
    checkpoint_legacy.write(ckpt_dir, 10, (model, old_optimizer),
                            {"data": data_state, "config_hash": "old"})
    proc = run_tool(["python3", "tools/convert_checkpoint.py",
                     f"--config={os.path.join(ROOT, 'configs', 'smoke.py')}",
                     f"--workdir={workdir}"])
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    got = checkpoint.load_arrays(ckpt_dir, 10)
    # Every old array, plus the new state's initial gradient norm.
    self.assertLen(got, len(jax.tree_util.tree_leaves(
        (model, old_optimizer))) + 1)
    self.assertEqual([float(v) for n, v in got.items()
                      if n.endswith("grad_norm")], [0.0])
    result = train_lib.train_and_evaluate(config, workdir)
    self.assertEqual(result["step"], 20)
    self.assertTrue(np.isfinite(result["loss"]))

  def test_old_format_converts_with_the_suggested_command(self):
    workdir = self.create_tempdir().full_path
    ckpt_dir = os.path.join(workdir, "checkpoints")
    want = train_lib.checkpoint.restore_latest(
        os.path.join(self.workdir, "checkpoints"),
        like={"model": models.build_model(self.config),
              "optimizer": pax.from_optax(models.make_optimizer(self.config))(
                  models.build_model(self.config).parameters())})
    old_tree = (want.tree["model"], want.tree["optimizer"])
    checkpoint_legacy.write(ckpt_dir, want.step, old_tree, want.metadata)
    with self.assertRaises(ValueError) as ctx:
      train_lib.train_and_evaluate(self.config, workdir)
    message = str(ctx.exception)
    self.assertIn("old format", message)
    command = re.search(r"`(python3 tools/convert_checkpoint\.py [^`]*)`",
                        message).group(1)
    config_path = os.path.join(self.create_tempdir().full_path, "config.py")
    with open(config_path, "w") as f:
      f.write("from configs import smoke\n\n\ndef get_config():\n"
              "  c = smoke.get_config()\n  c.num_steps = 40\n  return c\n")
    proc = run_tool(command.replace("CONFIG", config_path).split())
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    self.assertEqual(checkpoint.checkpoint_steps(ckpt_dir), [want.step])
    got = checkpoint.load_arrays(ckpt_dir, want.step)
    ref = checkpoint.load_arrays(os.path.join(self.workdir, "checkpoints"),
                                 want.step)
    self.assertEqual(sorted(got), sorted(ref))
    for name in ref:
      np.testing.assert_array_equal(got[name], ref[name])
    self.assertEqual(checkpoint.read_metadata(ckpt_dir, want.step),
                     want.metadata)
    # A workdir without old checkpoints: one clear line, exit code 2.
    proc = run_tool(
        command.replace("CONFIG", os.path.join(ROOT, "configs",
                                               "digits_mlp.py")).split()
        + [f"--workdir={self.create_tempdir().full_path}"])
    self.assertEqual(proc.returncode, 2, proc.stderr[-3000:])
    self.assertIn("No old-format checkpoints", proc.stderr)
    self.assertNotIn("Traceback", proc.stderr)


class KillTest(absltest.TestCase):
  """SIGKILLs a process that is writing ~20 MB checkpoints, many times."""

  NUM_KILLS = 12

  def _wait_dead(self, pid):
    for _ in range(1000):
      try:
        os.kill(pid, 0)
      except ProcessLookupError:
        return
      time.sleep(0.005)
    self.fail(f"writer {pid} did not die")

  def test_sigkill_during_saves_never_breaks_restore(self):
    directory = self.create_tempdir().full_path
    like = make_tree(0)
    rng = random.Random(20240601)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    zygote = subprocess.Popen([sys.executable, "-c", _ZYGOTE_SRC, directory],
                              env=env, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    pid = None
    last_saved = 0
    mid_write = 0
    start = time.monotonic()

    def command(text, until):
      zygote.stdin.write(text + "\n")
      zygote.stdin.flush()
      saved = []
      while True:
        line = zygote.stdout.readline().split()
        self.assertNotEqual(line, [], "the zygote process died")
        if line[0] == "saved":
          saved.append(int(line[1]))
        elif line[0] == until:
          return saved, line[1:]

    try:
      self.assertEqual(zygote.stdout.readline().strip(), "ready")
      for _ in range(self.NUM_KILLS):
        _, (pid,) = command("fork", until="pid")
        pid = int(pid)
        # Let it make at least one save, then kill it at a random moment.
        line = zygote.stdout.readline().split()
        self.assertEqual(line[0], "saved", line)
        time.sleep(rng.uniform(0.0, 0.4))
        os.kill(pid, signal.SIGKILL)
        self._wait_dead(pid)
        pid = None
        saved, _ = command("sync", until="sync")  # all its output is read
        printed = [int(line[1])] + saved
        self.assertGreater(min(printed), last_saved)
        last_saved = max(printed)
        mid_write += any(not n.isdigit() for n in os.listdir(directory))

        restored = checkpoint.restore_latest(directory, like)
        # The last reported save is durable; a kill between the rename and
        # the print may have made one more.
        self.assertIn(restored.step, (last_saved, last_saved + 1))
        self.assertEqual(restored.metadata, {"step": restored.step})
        _assert_trees_equal(self, restored.tree, make_tree(restored.step))
        last_saved = restored.step
        for step in checkpoint.checkpoint_steps(directory):
          if step == restored.step + 1:  # Killed after orbax's commit,
            continue  # before the manifest: skipped by restore_latest.
          checkpoint.verify(directory, step)
    finally:
      if pid is not None:
        os.kill(pid, signal.SIGKILL)
      zygote.stdin.close()
      zygote.wait(timeout=30)
      zygote.stdout.close()
    elapsed = time.monotonic() - start
    # Most kills must land inside a save (temp/trash dirs left behind), or
    # this test would not test what it claims.
    self.assertGreaterEqual(mid_write, self.NUM_KILLS // 3)
    checkpoint.save(directory, last_saved + 1, make_tree(last_saved + 1))
    self.assertEqual([n for n in os.listdir(directory) if not n.isdigit()],
                     [])
    print(f"KillTest: {self.NUM_KILLS} kills, {mid_write} mid-write, last "
          f"step {last_saved}, {elapsed:.1f} s")


if __name__ == "__main__":
  quick_exit.main()
