"""The training binary end to end: smoke run, exact resume, crash safety."""

import json
import os
import signal
import sys
import tempfile

from absl.testing import absltest
import jax.numpy as jnp
import numpy as np

from tensorboard.backend.event_processing import event_accumulator

from tools.trainer import checkpoint
from tools.trainer import config_schema
from tools.trainer import train_lib
from configs import smoke
import launch  # tests/launch.py, beside this file
import quick_exit  # tests/quick_exit.py, beside this file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = os.path.join(ROOT, "configs", "smoke.py")
HELPER = os.path.join(ROOT, "tests", "train_crash_helper.py")


def final_leaves(workdir):
  directory = os.path.join(workdir, "checkpoints")
  step = checkpoint.latest_step(directory)
  data = checkpoint.load_arrays(directory, step)
  return step, [data[k] for k in sorted(data)]


def tensorboard_scalars(workdir):
  """{tag: [(step, value)]} as TensorBoard's own reader sees the run."""
  acc = event_accumulator.EventAccumulator(
      os.path.join(workdir, "tensorboard"),
      size_guidance={event_accumulator.SCALARS: 0})
  acc.Reload()
  return {tag: [(e.step, e.value) for e in acc.Scalars(tag)]
          for tag in acc.Tags()["scalars"]}


def jsonl_scalars(workdir):
  """The same from metrics.jsonl (values rounded to float32, as stored)."""
  out = {}
  for line in open(os.path.join(workdir, "metrics.jsonl")):
    record = json.loads(line)
    for tag, value in record.items():
      if tag not in ("step", "time"):
        out.setdefault(tag, []).append((record["step"],
                                        float(np.float32(value))))
  return out


TRAIN_TAGS = ["train/accuracy", "train/grad_norm", "train/learning_rate",
              "train/loss", "train/steps_per_sec"]


def run(*args):
  """`python3 *args` as a process of its own, forked from a server that
  imported the trainer once (tests/launch.py)."""
  return launch.run([sys.executable, *args], capture_output=True, text=True,
                    timeout=300)


def run_helper(workdir, mode, step):
  return run(HELPER, SMOKE, workdir, mode, str(step))


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
    self.assertLen([f for f in os.listdir(tb_dir)
                    if f.startswith("events.out.tfevents")], 1)
    scalars = tensorboard_scalars(self.straight)
    self.assertEqual(sorted(scalars), sorted(TRAIN_TAGS + ["test/accuracy",
                                                           "test/loss"]))
    for tag in TRAIN_TAGS:  # Every logged step, once.
      self.assertEqual([s for s, _ in scalars[tag]], list(range(10, 101, 10)))
    self.assertEqual([s for s, _ in scalars["test/loss"]], [50, 100])
    self.assertEqual(scalars, jsonl_scalars(self.straight))
    config = smoke.get_config()
    schedule = train_lib.models.learning_rate_schedule(config)
    for step, lr in scalars["train/learning_rate"]:
      self.assertAlmostEqual(lr, float(schedule(step - 1)), places=6)
    self.assertTrue(all(v > 0 for _, v in scalars["train/grad_norm"] +
                        scalars["train/steps_per_sec"]))

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
    self._check_resumed_events(workdir)

  def _check_resumed_events(self, workdir):
    """TensorBoard reads each scalar once per step, as in a straight run."""
    self.assertLen(os.listdir(os.path.join(workdir, "tensorboard")), 1)
    resumed, straight = (tensorboard_scalars(workdir),
                         tensorboard_scalars(self.straight))
    self.assertEqual(resumed, jsonl_scalars(workdir))
    self.assertEqual(sorted(resumed), sorted(straight))
    for tag in resumed:
      self.assertEqual([s for s, _ in resumed[tag]],
                       [s for s, _ in straight[tag]], tag)
      if tag != "train/steps_per_sec":  # Training is bit-identical.
        self.assertEqual(resumed[tag], straight[tag], tag)

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
    self._check_resumed_events(workdir)  # Steps 50, 60 were logged twice.

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
    original = train_lib.tasks.loss_fn_for

    def nan_loss_fn_for(config):
      loss_fn = original(config)

      def nan_loss(model, batch):
        loss, (aux, model) = loss_fn(model, batch)
        return loss * jnp.nan, (dict(aux, loss=aux["loss"] * jnp.nan), model)

      return nan_loss

    train_lib.tasks.loss_fn_for = nan_loss_fn_for
    try:
      with self.assertRaisesRegex(
          train_lib.NonFiniteLossError,
          r"(?s)loss became nan in steps 21\.\.30.*step 20"):
        train_lib.train_and_evaluate(smoke.get_config(), workdir)
    finally:
      train_lib.tasks.loss_fn_for = original
    after = final_leaves(workdir)
    self.assertEqual(after[0], 20)
    for a, b in zip(good[1], after[1]):
      np.testing.assert_array_equal(a, b)

  def test_binary_runs_from_the_command_line(self):
    workdir = self.create_tempdir().full_path
    proc = run(os.path.join(ROOT, "tools", "train.py"), f"--config={SMOKE}",
               "--config.num_steps=20", f"--workdir={workdir}")
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    self.assertIn("Final test metrics after 20 steps", proc.stdout)
    proc = run(os.path.join(ROOT, "tools", "train.py"), f"--config={SMOKE}",
               "--config.batch_size=0", f"--workdir={workdir}")
    self.assertEqual(proc.returncode, 2)  # A usage error.
    self.assertIn("`batch_size` must be an integer >= 1", proc.stderr)
    self.assertNotIn("Traceback", proc.stderr)

  def test_help_lists_every_config_key(self):
    proc = run(os.path.join(ROOT, "tools", "train.py"), "--help")
    self.assertEqual(proc.returncode, 0, proc.stderr)
    for key in config_schema.KEYS:
      if key.name in config_schema.FREE_FORM_KEYS:
        self.assertIn(f"--config.{key.name}.KEY=VALUE", proc.stdout)
      else:
        self.assertIn(f"--config.{key.name}={key.default!r}", proc.stdout)
      self.assertIn(key.help, proc.stdout)
    for model, keys in config_schema.MODEL_KEYS.items():
      for key in keys:
        self.assertIn(f"--config.model_config.{key.name}={key.default!r}",
                      proc.stdout)
        self.assertIn(f"({model}) {key.help}", proc.stdout)
    self.assertEqual(
        set(config_schema.base_config().keys()),
        {k.name for k in config_schema.KEYS})


if __name__ == "__main__":
  quick_exit.main()
