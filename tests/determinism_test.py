"""Determinism: the same config and seed give bit-identical params on CPU.

configs/smoke.py is trained twice in separate workdirs: once in this process
(`train_and_evaluate`) and once by the binary in a fresh process
(`python3 tools/train.py`). The final checkpoints (model, optimizer, data
position) and the logged training losses must be identical.
"""

import json
import os
import subprocess
import sys

from absl.testing import absltest
import jax
import numpy as np

from configs import smoke
from tools.trainer import checkpoint
from tools.trainer import models
from tools.trainer import train_lib
import quick_exit  # tests/quick_exit.py, beside this file

ROOT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))


def final_checkpoint(workdir):
  directory = os.path.join(workdir, "checkpoints")
  step = checkpoint.latest_step(directory, verify_integrity=True)
  data = checkpoint.load_arrays(directory, step)
  leaves = [data[k] for k in sorted(data)]
  return step, leaves, checkpoint.read_metadata(directory, step)


def train_losses(workdir):
  out = []
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    for line in f:
      record = json.loads(line)
      out.append((record["step"], record.get("train/loss")))
  return out


class DeterminismTest(absltest.TestCase):

  def test_two_runs_bit_identical(self):
    in_process = self.create_tempdir("in_process").full_path
    binary = self.create_tempdir("binary").full_path
    proc = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "tools", "train.py"),
         f"--config={os.path.join(ROOT, 'configs', 'smoke.py')}",
         f"--workdir={binary}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=dict(os.environ, PYTHONPATH=ROOT), cwd=ROOT)
    train_lib.train_and_evaluate(smoke.get_config(), in_process)
    out, err = proc.communicate(timeout=600)
    self.assertEqual(proc.returncode, 0, (out + err)[-3000:])

    step_a, leaves_a, meta_a = final_checkpoint(in_process)
    step_b, leaves_b, meta_b = final_checkpoint(binary)
    self.assertEqual(step_a, smoke.get_config().num_steps)
    self.assertEqual(step_a, step_b)
    self.assertLen(leaves_a, len(leaves_b))
    for a, b in zip(leaves_a, leaves_b):
      self.assertEqual(a.dtype, b.dtype)
      self.assertEqual(a.tobytes(), b.tobytes())
    # Same data position and config hash.
    self.assertEqual(meta_a, meta_b)
    self.assertEqual(train_losses(in_process), train_losses(binary))

  def test_seed_changes_the_model(self):
    config = smoke.get_config()
    a = jax.tree_util.tree_leaves(models.build_model(config))
    again = jax.tree_util.tree_leaves(models.build_model(config))
    config.seed = 1
    b = jax.tree_util.tree_leaves(models.build_model(config))
    for x, y in zip(a, again):
      self.assertEqual(np.asarray(x).tobytes(), np.asarray(y).tobytes())
    self.assertTrue(any(np.asarray(x).tobytes() != np.asarray(y).tobytes()
                        for x, y in zip(a, b)))


if __name__ == "__main__":
  quick_exit.main()
