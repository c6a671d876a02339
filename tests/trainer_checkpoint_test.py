"""Tests for tools/trainer/checkpoint.py: atomic, verified checkpoints."""

import doctest
import json
import os
import random
import signal
import subprocess
import sys
import time
from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np

from tools.trainer import checkpoint

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

  @parameterized.named_parameters(("checkpoint", checkpoint),)
  def test_examples(self, module):
    result = doctest.testmod(
        module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    self.assertGreater(result.attempted, 0)
    self.assertEqual(result.failed, 0, "see the doctest output above")


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
            "c64": np.array([1 + 2j], np.complex64), "empty": np.zeros((0, 2)),
            "nested": [np.float64(np.pi), (np.arange(4, dtype=np.uint16),)]}
    meta = {"step": 5, "rng": [1, 2], "config_hash": "abc", "loss": 0.5}
    path = checkpoint.save(self.dir, 5, tree, meta)
    self.assertEqual(path, os.path.join(self.dir, "ckpt_5"))
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
    leaves = jax.tree_util.tree_leaves(tree)
    restored = checkpoint.restore_latest(self.dir, leaves)
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
    self.assertEqual(sorted(os.listdir(self.dir)),
                     ["ckpt_10", "ckpt_2", "ckpt_20"])
    self.assertEqual(checkpoint.restore(self.dir, 10, make_tree(0, 10))
                     .metadata["data"], {"epoch": 10, "index": 0})

  @parameterized.named_parameters(
      ("truncated_arrays", "arrays.npz", lambda b: b[:len(b) // 2]),
      ("flipped_byte", "arrays.npz",
       lambda b: b[:300] + bytes([b[300] ^ 1]) + b[301:]),
      ("empty_arrays", "arrays.npz", lambda b: b""),
      ("missing_arrays", "arrays.npz", None),
      ("missing_metadata", "metadata.json", None),
      ("truncated_metadata", "metadata.json", lambda b: b[:-20]),
      ("edited_metadata", "metadata.json",
       lambda b: b.replace(b'"step": 3', b'"step": 4')),
  )
  def test_damaged_checkpoint_falls_back_to_previous(self, name, damage):
    self._save_steps([1, 2, 3])
    path = os.path.join(self.dir, "ckpt_3", name)
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
    self.assertIn("ckpt_3", logs.output[0])
    with self.assertRaises(checkpoint.CheckpointError):
      checkpoint.restore(self.dir, 3, make_tree(0, big=10))

  def test_all_damaged_is_an_error_not_a_fresh_start(self):
    self._save_steps([1])
    os.remove(os.path.join(self.dir, "ckpt_1", "arrays.npz"))
    with self.assertLogs(level="WARNING"):
      with self.assertRaisesRegex(checkpoint.CheckpointError,
                                  "All 1 checkpoints .* are damaged"):
        checkpoint.restore_latest(self.dir, make_tree(0, big=10))

  def test_mismatch_names_first_leaf_and_does_not_fall_back(self):
    self._save_steps([1, 2])
    other = make_tree(0, big=10)
    other["model"]["b"] = np.zeros((3, 5), np.int32)
    with self.assertRaisesRegex(
        ValueError, r"ckpt_2 does not match .* leaf 0 \(\['model'\]\['b'\]\)"
        r": the checkpoint has shape \(3, 4\) dtype int32.*expected shape "
        r"\(3, 5\) dtype int32.*different model"):
      checkpoint.restore_latest(self.dir, other)
    other = make_tree(0, big=10)
    other["model"]["w"] = other["model"]["w"].astype(np.float16)
    with self.assertRaisesRegex(ValueError, r"\['model'\]\['w'\].*float16"):
      checkpoint.restore_latest(self.dir, other)

  def test_leaf_count_mismatch(self):
    self._save_steps([1])
    fewer = make_tree(0, big=10)
    del fewer["optimizer"]
    with self.assertRaisesRegex(ValueError, r"has 4 leaves but 2 are expected"
                                r".*first extra one is leaf 2 \(saved as "
                                r"\['optimizer'\]\[0\]\)"):
      checkpoint.restore_latest(self.dir, fewer)
    more = make_tree(0, big=10)
    more["optimizer"].append(np.zeros(2))
    with self.assertRaisesRegex(
        ValueError,
        r"has 4 leaves but 5.*first missing one is leaf 4 \(\['optimizer'\]"
        r"\[2\]"):
      checkpoint.restore_latest(self.dir, more)

  def test_crash_before_rename_leaves_previous_checkpoint(self):
    self._save_steps([1])
    real_rename = os.rename

    def failing_rename(src, dst):
      if os.path.basename(dst) == "ckpt_2":
        raise OSError("simulated crash")
      return real_rename(src, dst)

    with mock.patch.object(checkpoint.os, "rename", failing_rename):
      with self.assertRaisesRegex(OSError, "simulated crash"):
        self._save_steps([2])
    self.assertEqual(checkpoint.checkpoint_steps(self.dir), [1])
    # A process killed at that point would leave its temp dir behind:
    os.mkdir(os.path.join(self.dir, ".tmp_ckpt_2.123.abcd"))
    self.assertEqual(checkpoint.restore_latest(
        self.dir, make_tree(0, big=10)).step, 1)
    self._save_steps([2])
    self.assertEqual(sorted(os.listdir(self.dir)), ["ckpt_1", "ckpt_2"])

  def test_resave_same_step_replaces(self):
    checkpoint.save(self.dir, 4, make_tree(1, big=10), {"v": 1})
    checkpoint.save(self.dir, 4, make_tree(2, big=10), {"v": 2})
    restored = checkpoint.restore_latest(self.dir, make_tree(0, big=10))
    self.assertEqual((restored.step, restored.metadata), (4, {"v": 2}))
    _assert_trees_equal(self, restored.tree, make_tree(2, big=10))
    self.assertEqual(os.listdir(self.dir), ["ckpt_4"])

  def test_newer_checkpoints_of_an_abandoned_run_are_set_aside(self):
    self._save_steps([1, 2, 3], keep=2)
    with self.assertLogs(level="WARNING"):
      self._save_steps([2], keep=2)
    self.assertEqual(checkpoint.checkpoint_steps(self.dir), [2])
    self.assertIn("abandoned_ckpt_3", os.listdir(self.dir))
    self.assertEqual(checkpoint.latest_step(self.dir), 2)

  def test_bad_inputs(self):
    with self.assertRaisesRegex(TypeError, "JSON-serialisable"):
      checkpoint.save(self.dir, 1, [np.zeros(2)], {"x": np.float32(1)})
    with self.assertRaisesRegex(TypeError, "key_data"):
      checkpoint.save(self.dir, 1, [jax.random.key(0)])
    with self.assertRaisesRegex(TypeError, "without pickle"):
      checkpoint.save(self.dir, 1, [np.array(["a"], dtype=object)])
    with self.assertRaisesRegex(ValueError, "non-negative int"):
      checkpoint.save(self.dir, -1, [np.zeros(2)])
    self.assertEqual(os.listdir(self.dir), [])

  def test_no_pickle_in_arrays_file(self):
    checkpoint.save(self.dir, 1, make_tree(1, big=10))
    path = os.path.join(self.dir, "ckpt_1", "arrays.npz")
    with np.load(path, allow_pickle=False) as npz:
      self.assertLen(npz.files, 4)
    with open(os.path.join(self.dir, "ckpt_1", "metadata.json")) as f:
      meta = json.load(f)
    self.assertEqual(meta["leaves"][3], {"path": "['optimizer'][1]",
                                         "shape": [7], "dtype": "bfloat16"})


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
        mid_write += any(n.startswith(".") for n in os.listdir(directory))

        restored = checkpoint.restore_latest(directory, like)
        # The last reported save is durable; a kill between the rename and
        # the print may have made one more.
        self.assertIn(restored.step, (last_saved, last_saved + 1))
        self.assertEqual(restored.metadata, {"step": restored.step})
        _assert_trees_equal(self, restored.tree, make_tree(restored.step))
        last_saved = restored.step
        for step in checkpoint.checkpoint_steps(directory):
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
    self.assertEqual([n for n in os.listdir(directory) if n.startswith(".")],
                     [])
    print(f"KillTest: {self.NUM_KILLS} kills, {mid_write} mid-write, last "
          f"step {last_saved}, {elapsed:.1f} s")


if __name__ == "__main__":
  absltest.main()
