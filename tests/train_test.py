"""The training binary end to end: smoke run, exact resume, crash safety."""

import json
import os
import signal
import subprocess
import sys
import tempfile

from absl.testing import absltest
import jax.numpy as jnp
import numpy as np

from tools.trainer import checkpoint
from tools.trainer import config_schema
from tools.trainer import train_lib
from configs import smoke

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = os.path.join(ROOT, "configs", "smoke.py")
HELPER = os.path.join(ROOT, "tests", "train_crash_helper.py")


def final_leaves(workdir):
  directory = os.path.join(workdir, "checkpoints")
  step = checkpoint.latest_step(directory)
  data = checkpoint.load_arrays(directory, step)
  return step, [data[k] for k in sorted(data)]


def run_helper(workdir, mode, step):
  proc = subprocess.run(
      [sys.executable, HELPER, SMOKE, workdir, mode, str(step)],
      capture_output=True, text=True, timeout=300, check=False)
  return proc


class TrainTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.straight = tempfile.mkdtemp(dir=absltest.get_default_test_tmpdir())
    cls.result = train_lib.train_and_evaluate(smoke.get_config(), cls.straight)

  def test_smoke_run_writes_everything(self):
    result = self.result
    self.assertEqual(result["step"], 100)
    self.assertGreater(result["accuracy"], 0.8)  # Chance is 0.1.
    self.assertTrue(os.path.isdir(result["checkpoint"]))
    records = [json.loads(l) for l in open(result["metrics"])]
    self.assertEqual(sorted({r["step"] for r in records}),
                     list(range(10, 101, 10)))
    tb_dir = os.path.join(self.straight, "tensorboard")
    self.assertTrue(any(f.startswith("events.out.tfevents")
                        for f in os.listdir(tb_dir)))

  def test_resume_after_kill_is_bit_identical(self):
    workdir = self.create_tempdir().full_path
    proc = run_helper(workdir, "after_save", 40)
    self.assertEqual(proc.returncode, -signal.SIGKILL, proc.stderr[-2000:])
    self.assertEqual(checkpoint.latest_step(
        os.path.join(workdir, "checkpoints")), 40)
    result = train_lib.train_and_evaluate(smoke.get_config(), workdir)
    self.assertEqual(result["step"], 100)
    step_a, leaves_a = final_leaves(self.straight)
    step_b, leaves_b = final_leaves(workdir)
    self.assertEqual(step_a, step_b)
    for a, b in zip(leaves_a, leaves_b):
      np.testing.assert_array_equal(a, b)
    steps = [json.loads(l)["step"] for l in open(result["metrics"])]
    self.assertEqual(steps, sorted(steps))  # No duplicated records.

  def test_kill_during_checkpoint_write_resumes_from_previous(self):
    workdir = self.create_tempdir().full_path
    proc = run_helper(workdir, "during_save", 60)
    self.assertEqual(proc.returncode, -signal.SIGKILL, proc.stderr[-2000:])
    self.assertEqual(checkpoint.latest_step(
        os.path.join(workdir, "checkpoints")), 40)
    train_lib.train_and_evaluate(smoke.get_config(), workdir)
    _, leaves_a = final_leaves(self.straight)
    _, leaves_b = final_leaves(workdir)
    for a, b in zip(leaves_a, leaves_b):
      np.testing.assert_array_equal(a, b)

  def test_bad_config_lists_valid_keys_and_ranges(self):
    config = smoke.get_config()
    config.unlock()
    config.learnig_rate = 0.1
    with self.assertRaisesRegex(ValueError, r"unknown config key `learnig_rate`"
                                r".*learning_rate"):
      train_lib.train_and_evaluate(config, self.create_tempdir().full_path)
    config = smoke.get_config()
    config.steps_per_call = 7
    with self.assertRaisesRegex(ValueError, "multiple of `steps_per_call`"):
      config_schema.validate(config)
    config = smoke.get_config()
    config.learning_rate = -1.0
    with self.assertRaisesRegex(ValueError, r"learning_rate.*\(0, 10\]"):
      config_schema.validate(config)

  def test_unwritable_workdir(self):
    path = os.path.join(self.create_tempdir().full_path, "file")
    open(path, "w").close()
    with self.assertRaisesRegex(ValueError, "Cannot write to workdir"):
      train_lib.train_and_evaluate(smoke.get_config(), path + "/sub")

  def test_nan_loss_stops_and_keeps_last_good_checkpoint(self):
    workdir = self.create_tempdir().full_path
    proc = run_helper(workdir, "after_save", 20)
    self.assertEqual(proc.returncode, -signal.SIGKILL, proc.stderr[-2000:])
    good = final_leaves(workdir)
    original = train_lib.models.loss_fn_for

    def nan_loss_fn_for(config):
      loss_fn = original(config)

      def nan_loss(model, batch):
        loss, (aux, model) = loss_fn(model, batch)
        return loss * jnp.nan, (dict(aux, loss=aux["loss"] * jnp.nan), model)

      return nan_loss

    train_lib.models.loss_fn_for = nan_loss_fn_for
    try:
      with self.assertRaisesRegex(
          train_lib.NonFiniteLossError,
          r"(?s)loss became nan in steps 21\.\.30.*step 20"):
        train_lib.train_and_evaluate(smoke.get_config(), workdir)
    finally:
      train_lib.models.loss_fn_for = original
    after = final_leaves(workdir)
    self.assertEqual(after[0], 20)
    for a, b in zip(good[1], after[1]):
      np.testing.assert_array_equal(a, b)

  def test_binary_runs_from_the_command_line(self):
    workdir = self.create_tempdir().full_path
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "train.py"),
         f"--config={SMOKE}", "--config.num_steps=20", f"--workdir={workdir}"],
        capture_output=True, text=True, timeout=300, check=False)
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    self.assertIn("Final test metrics after 20 steps", proc.stdout)
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "train.py"),
         f"--config={SMOKE}", "--config.batch_size=0", f"--workdir={workdir}"],
        capture_output=True, text=True, timeout=300, check=False)
    self.assertNotEqual(proc.returncode, 0)
    self.assertIn("`batch_size` must be an integer >= 1", proc.stderr)


if __name__ == "__main__":
  absltest.main()
