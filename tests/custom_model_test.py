"""Your model and data by import path, through the unchanged binary.

A package written to a temporary directory outside the repository (a
`pax.Module` factory and a dataset factory whose sources have only `len`
and `__getitem__`) is trained by `tools/train.py` with
`--config.model=...` / `--config.dataset=...`; a run killed with SIGKILL
right after a checkpoint resumes bit-identical to an uninterrupted run (the
grain pipeline's position is in the checkpoint). The library entry point
`train_and_evaluate` trains the same package from Python.
"""

import json
import os
import sys
import tempfile
import textwrap

from absl.testing import absltest
import numpy as np

from tools.trainer import checkpoint
from tools.trainer import train_lib
from configs import smoke
import launch  # tests/launch.py, beside this file
import quick_exit  # tests/quick_exit.py, beside this file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(ROOT, "tools", "train.py")
CRASH = os.path.join(ROOT, "tests", "train_crash_helper.py")

MODELS = '''
import jax
import pax_haiku as pax


class TinyNet(pax.Module):

  def __init__(self, width):
    super().__init__()
    self.hidden = pax.Linear(4, width)
    self.out = pax.Linear(width, 3)

  def __call__(self, x):
    return self.out(jax.nn.relu(self.hidden(x)))


def build(config):
  return TinyNet(config.model_config.get("width", 16))
'''

DATA = '''
import os
import numpy as np


class Blobs:
  """Only len and __getitem__: the generic (per-example) read path."""

  def __init__(self, x, y):
    self.x, self.y = x, y

  def __len__(self):
    return len(self.x)

  def __getitem__(self, i):
    return self.x[i], self.y[i]


def make(config):
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "blobs.npz")
  if not os.path.exists(path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, size=600).astype(np.int32)
    x = (rng.normal(size=(600, 4)) + 3.0 * y[:, None]).astype(np.float32)
    np.savez(path, x=x, y=y)
  with np.load(path) as f:
    x, y = f["x"], f["y"]
  return Blobs(x[:500], y[:500]), Blobs(x[500:], y[500:])
'''

CONFIG = '''
from configs import smoke


def get_config():
  c = smoke.get_config()
  c.model = "mytask.models:build"
  c.dataset = "mytask.data:make"
  c.num_steps = 60
  c.steps_per_call = 10
  c.checkpoint_every = 20
  c.eval_every = 20
  c.log_every = 10
  c.learning_rate = 0.05
  return c
'''


def write_package(root):
  pkg = os.path.join(root, "mytask")
  os.makedirs(pkg)
  for name, text in (("__init__.py", ""), ("models.py", MODELS),
                     ("data.py", DATA)):
    with open(os.path.join(pkg, name), "w") as f:
      f.write(textwrap.dedent(text))
  config = os.path.join(root, "mytask_config.py")
  with open(config, "w") as f:
    f.write(CONFIG)
  return config


def run(argv, cwd):
  """`python3 *argv` in `cwd` with the repository root on PYTHONPATH.

  Each run is a process of its own, forked from a server that imported the
  trainer once (tests/launch.py); one environment for all, so one server.
  """
  return launch.run([sys.executable, *argv], cwd=cwd, capture_output=True,
                    text=True, timeout=600,
                    env=dict(os.environ, PYTHONPATH=ROOT))


def eval_records(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f]
  return {r["step"]: {k: v for k, v in r.items() if k != "time"}
          for r in records if "test/accuracy" in r}


class CustomModelTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.pkg_root = tempfile.mkdtemp(dir=absltest.get_default_test_tmpdir())
    cls.config = write_package(cls.pkg_root)
    # The uninterrupted run, by the binary, from the package's directory.
    cls.whole = os.path.join(cls.pkg_root, "whole")
    cls.proc = run([TRAIN, f"--config={cls.config}", f"--workdir={cls.whole}"],
                   cwd=cls.pkg_root)

  def test_binary_trains_a_package_outside_the_repository(self):
    self.assertEqual(self.proc.returncode, 0, self.proc.stderr[-3000:])
    self.assertNotIn("mytask", ROOT)
    # The console: the trainer's progress lines, none of orbax's INFO lines.
    self.assertIn("step 60/60 |", self.proc.stderr)
    self.assertNotIn("checkpoint_manager.py", self.proc.stderr)
    self.assertEqual(checkpoint.checkpoint_steps(
        os.path.join(self.whole, "checkpoints")), [20, 40, 60])
    evals = eval_records(self.whole)
    self.assertEqual(sorted(evals), [20, 40, 60])
    self.assertTrue(all(np.isfinite(r["test/loss"]) for r in evals.values()))
    # Three well-separated blobs: the tiny net learns them.
    self.assertGreater(evals[60]["test/accuracy"], 0.8)
    meta = checkpoint.read_metadata(os.path.join(self.whole, "checkpoints"),
                                    60)
    self.assertEqual(meta["data"]["grain"], {"next_index": 60})
    self.assertEqual(meta["data"]["num_examples"], 500)

  def test_killed_run_resumes_bit_identical(self):
    workdir = os.path.join(self.pkg_root, "killed")
    # The helper, like the binary, imports `mytask` from its directory.
    crashed = run([CRASH, self.config, workdir, "after_save", "20"],
                  cwd=self.pkg_root)
    self.assertEqual(crashed.returncode, -9, crashed.stderr[-3000:])
    ckpt_dir = os.path.join(workdir, "checkpoints")
    self.assertEqual(checkpoint.checkpoint_steps(ckpt_dir), [20])
    resumed = run([TRAIN, f"--config={self.config}", f"--workdir={workdir}"],
                  cwd=self.pkg_root)
    self.assertEqual(resumed.returncode, 0, resumed.stderr[-3000:])
    self.assertIn("Resumed from", resumed.stdout)
    got = checkpoint.load_arrays(ckpt_dir, 60)
    want = checkpoint.load_arrays(os.path.join(self.whole, "checkpoints"), 60)
    self.assertEqual(sorted(got), sorted(want))
    for name in want:
      np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    self.assertEqual(eval_records(workdir)[60], eval_records(self.whole)[60])

  def test_library_entry_point_trains_the_package(self):
    sys.path.insert(0, self.pkg_root)
    try:
      config = smoke.get_config()
      config.model = "mytask.models:build"
      config.dataset = "mytask.data:make"
      config.num_steps = 20
      config.eval_every = config.checkpoint_every = 20
      config.plot = False
      result = train_lib.train_and_evaluate(
          config, self.create_tempdir().full_path)
    finally:
      sys.path.remove(self.pkg_root)
    self.assertEqual(result["step"], 20)
    self.assertTrue(np.isfinite(result["loss"]))

  def test_worked_example_trains(self):
    scratch = self.create_tempdir().full_path
    proc = run([TRAIN, "--config=examples/custom_model/config.py",
                "--config.num_steps=200",
                f"--config.dataset_config.path={scratch}/rings.npz",
                f"--workdir={scratch}/run"], cwd=ROOT)
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    self.assertTrue(os.path.exists(os.path.join(scratch, "rings.npz")))
    self.assertGreater(eval_records(os.path.join(scratch, "run"))[200]
                       ["test/accuracy"], 0.9)


if __name__ == "__main__":
  quick_exit.main()
