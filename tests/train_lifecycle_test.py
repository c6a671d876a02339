"""The training binary on a cluster: one run per workdir, SIGTERM, divergence,
failed saves, config changes on resume, cut metrics files."""

import errno
import json
import os
import random
import re
import shlex
import signal
import sys
import tempfile
import time
from unittest import mock

from absl.testing import absltest
import numpy as np

from configs import smoke
from tools.trainer import checkpoint
from tools.trainer import lifecycle
from tools.trainer import metrics as metrics_lib
from tools.trainer import resume_config
from tools.trainer import storage_checks
from tools.trainer import train_lib
from tools.trainer import workdir_lock
import launch  # tests/launch.py, beside this file
import quick_exit  # tests/quick_exit.py, beside this file

ROOT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
TRAIN = os.path.join(ROOT, "tools", "train.py")
SMOKE = os.path.join(ROOT, "configs", "smoke.py")
NUM_SIGTERMS = 10
SEED = 20261202
# The binary's runs here: long enough that a signal sent once training runs
# lands in the loop.
LONGER = ("--config.num_steps=600", "--config.checkpoint_every=100",
          "--config.eval_every=300")


def final_state(workdir):
  """(step, {name: array}) of the workdir's newest checkpoint."""
  directory = os.path.join(workdir, "checkpoints")
  step = checkpoint.latest_step(directory)
  return step, checkpoint.load_arrays(directory, step)


def metric_rows(workdir):
  """metrics.jsonl without wall times: [(step, {name: value})]."""
  return [(r["step"], {k: v for k, v in r.items()
                       if k not in ("step", "time", "train/steps_per_sec")})
          for r in metrics_lib.read_metrics(workdir)]


class BinaryLifecycleTest(absltest.TestCase):
  """Runs tools/train.py as a cluster would.

  Each run is a process of its own, forked from a server that imported the
  trainer once (tests/launch.py).
  """

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    # A fresh directory: the default test tmpdir outlives runs.
    cls.tmp = tempfile.mkdtemp(dir=absltest.get_default_test_tmpdir())
    cls.env = dict(
        os.environ, PYTHONPATH=ROOT,
        # The suite's shared cache when tools/test.sh set one.
        JAX_COMPILATION_CACHE_DIR=(os.environ.get("JAX_COMPILATION_CACHE_DIR")
                                   or os.path.join(cls.tmp, "jax_cache")),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    # The uninterrupted run that the runs of the lifecycle tests reproduce.
    cls.reference = os.path.join(cls.tmp, "reference")
    proc = cls.train(cls.reference, *LONGER)
    assert proc.returncode == 0, proc.stderr[-3000:]

  @classmethod
  def command(cls, workdir, *extra):
    return [sys.executable, TRAIN, f"--config={SMOKE}",
            f"--workdir={workdir}", *extra]

  @classmethod
  def train(cls, workdir, *extra):
    return launch.run(cls.command(workdir, *extra), capture_output=True,
                      text=True, env=cls.env, cwd=ROOT, timeout=600)

  def start(self, workdir, *extra):
    proc = launch.Popen(self.command(workdir, *extra), stdout=launch.PIPE,
                        stderr=launch.PIPE, text=True, env=self.env, cwd=ROOT)
    self.addCleanup(proc.kill)
    return proc

  def wait_for_lock(self, workdir, pid, timeout=120):
    path = os.path.join(workdir, workdir_lock.LOCK_FILE)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
      try:
        with open(path) as f:
          if json.load(f).get("pid") == pid:
            return
      except (OSError, ValueError):
        pass
      time.sleep(0.02)
    self.fail(f"pid {pid} never took the lock of {workdir}")

  def assert_same_run(self, workdir):
    ref_step, ref = final_state(self.reference)
    step, got = final_state(workdir)
    self.assertEqual(step, ref_step)
    self.assertEqual(sorted(got), sorted(ref))
    for name in ref:
      np.testing.assert_array_equal(got[name], ref[name], err_msg=name)
    self.assertEqual(metric_rows(workdir), metric_rows(self.reference))

  def test_second_run_on_a_workdir_exits_2_naming_the_holder(self):
    workdir = os.path.join(self.tmp, "two_runs")
    first = self.start(workdir, *LONGER)
    self.wait_for_lock(workdir, first.pid)
    # Paused, so that it holds the lock however fast it trains.
    first.send_signal(signal.SIGSTOP)
    try:
      second = self.train(workdir, *LONGER)
    finally:
      first.send_signal(signal.SIGCONT)
    self.assertEqual(second.returncode, 2, second.stderr[-2000:])
    self.assertRegex(second.stderr,
                     rf"error: The workdir .* is in use by another run: held "
                     rf"by pid {first.pid} on host \S+ since")
    out, err = first.communicate(timeout=600)
    self.assertEqual(first.returncode, 0, err[-3000:])
    self.assert_same_run(workdir)

  def test_sigterm_at_seeded_moments_resumes_bit_identical(self):
    rng = random.Random(SEED)
    workdir = tempfile.mkdtemp(dir=self.tmp)
    preempted = attempts = 0
    while preempted < NUM_SIGTERMS:
      attempts += 1
      self.assertLess(attempts, 3 * NUM_SIGTERMS, "runs keep ending first")
      resumed = checkpoint.latest_step(
          os.path.join(workdir, "checkpoints")) or 0
      proc = self.start(workdir, *LONGER)
      self.wait_for_lock(workdir, proc.pid)
      self.wait_for_training(workdir, resumed, proc)
      time.sleep(rng.uniform(0.0, 0.3))
      proc.send_signal(signal.SIGTERM)
      out, err = proc.communicate(timeout=600)
      done = checkpoint.latest_step(os.path.join(workdir, "checkpoints"))
      # A signal after the run ended (printing its results) kills it as
      # usual; its work is complete.
      if proc.returncode == 0 or (proc.returncode == -signal.SIGTERM and
                                  done == 600):
        self.assert_same_run(workdir)
        workdir = tempfile.mkdtemp(dir=self.tmp)
        continue
      self.assertEqual(proc.returncode, lifecycle.PREEMPTED_EXIT_CODE,
                       err[-3000:])
      step = int(re.search(r"preempted at step (\d+) \(SIGTERM\)",
                           err).group(1))
      self.assertEqual(done, step)
      preempted += 1
    proc = self.train(workdir, *LONGER)
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    self.assert_same_run(workdir)

  def wait_for_training(self, workdir, resumed, proc, timeout=300):
    """Until metrics.jsonl has a record after step `resumed`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
      try:
        if any(r["step"] > resumed
               for r in metrics_lib.read_metrics(workdir)):
          return
      except (OSError, ValueError):
        pass
      time.sleep(0.01)

  def test_diverging_config_stops_and_its_fix_trains(self):
    workdir = os.path.join(self.tmp, "diverging")
    diverging = ["--config.optimizer=sgd", "--config.learning_rate=1.0",
                 "--config.grad_clip=1e9", "--config.checkpoint_every=10",
                 "--config.model_config.hidden_sizes=(64,64,64,64,64,64)"]
    proc = self.train(workdir, *diverging)
    self.assertEqual(proc.returncode, 1, proc.stderr[-3000:])
    message = proc.stderr[proc.stderr.index("error: "):]
    pinned = int(re.search(r"The checkpoint of step (\d+)", message).group(1))
    self.assertEqual(checkpoint.latest_step(
        os.path.join(workdir, "checkpoints")), pinned)
    fix = re.search(r"rerun with (.*) to resume from step", message).group(1)
    proc = self.train(workdir, *diverging, *shlex.split(fix))
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    loss = metrics_lib.read_metrics(workdir)[-1]["test/loss"]
    self.assertTrue(np.isfinite(loss))
    self.assertTrue(os.path.exists(
        os.path.join(workdir, f"config.{pinned}.json")))


class _ScaledLoss:
  """Wraps the train chunk so that the reported loss grows from call
  `start` on by `factor` per call (the weights train normally)."""

  def __init__(self, start, factor):
    self.start, self.factor, self.calls = start, factor, 0
    self.original = train_lib.make_train_chunk

  def __call__(self, *args, **kwargs):
    chunk = self.original(*args, **kwargs)

    def scaled(*a):
      model, optimizer, aux = chunk(*a)
      self.calls += 1
      scale = self.factor ** max(0, self.calls - self.start + 1)
      return model, optimizer, dict(aux, loss=aux["loss"] * scale)

    return scaled


class InProcessLifecycleTest(absltest.TestCase):

  def config(self, **overrides):
    config = smoke.get_config()
    for k, v in overrides.items():
      config[k] = v
    return config

  def test_divergence_pins_the_lowest_loss_checkpoint(self):
    workdir = self.create_tempdir().full_path
    config = self.config(checkpoint_every=10, keep_checkpoints=2,
                         divergence_warmup=2)
    with mock.patch.object(train_lib, "make_train_chunk",
                           _ScaledLoss(start=5, factor=3.0)):
      with self.assertRaises(lifecycle.DivergedError) as cm:
        train_lib.train_and_evaluate(config, workdir)
    msg = str(cm.exception)
    self.assertNotIsInstance(cm.exception, lifecycle.NonFiniteLossError)
    self.assertRegex(msg, r"Training diverged in steps \d+\.\.\d+: loss .* is "
                     r"above 10 x the running median")
    ckpt_dir = os.path.join(workdir, "checkpoints")
    pinned = int(re.search(r"The checkpoint of step (\d+)", msg).group(1))
    # The last unscaled chunk (steps 31..40) has the lowest loss.
    self.assertEqual(pinned, 40)
    # Rotation kept it beside the newest two; those were moved aside.
    self.assertEqual(checkpoint.checkpoint_steps(ckpt_dir), [pinned])
    moved = sorted(int(n[len(lifecycle.DIVERGED_PREFIX):])
                   for n in os.listdir(ckpt_dir)
                   if n.startswith(lifecycle.DIVERGED_PREFIX))
    self.assertLen(moved, 2)
    self.assertGreater(min(moved), pinned)
    self.assertIn(", ".join(map(str, moved)), msg)
    self.assertIn("--allow_config_change", msg)
    # The fix: a lower rate, resumed from the pinned step, trains on.
    result = train_lib.train_and_evaluate(
        self.config(checkpoint_every=10, keep_checkpoints=2,
                    learning_rate=1e-3), workdir, allow_config_change=True)
    self.assertEqual(result["step"], 100)
    self.assertTrue(np.isfinite(result["loss"]))

  def test_failed_save_is_one_clear_error_and_keeps_checkpoints(self):
    workdir = self.create_tempdir().full_path
    original = checkpoint.CheckpointManager.save
    calls = []

    def failing_save(self_, step, *args, **kwargs):
      calls.append(step)
      if len(calls) == 3:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
      return original(self_, step, *args, **kwargs)

    with mock.patch.object(checkpoint.CheckpointManager, "save",
                           failing_save):
      with self.assertRaises(storage_checks.StorageError) as cm:
        train_lib.train_and_evaluate(self.config(), workdir)
    self.assertRegex(
        str(cm.exception),
        r"^Cannot write a checkpoint in .*/checkpoints: No space left on "
        r"device\.\nFix: free space there, .*the ones already written are "
        r"intact\)\.$")
    ckpt_dir = os.path.join(workdir, "checkpoints")
    self.assertEqual(checkpoint.checkpoint_steps(ckpt_dir), [20, 40])
    result = train_lib.train_and_evaluate(self.config(), workdir)
    self.assertEqual(result["step"], 100)

  def test_optimization_change_on_resume_is_refused(self):
    workdir = self.create_tempdir().full_path
    train_lib.train_and_evaluate(self.config(num_steps=40), workdir)
    with self.assertRaisesRegex(resume_config.ConfigChangeError,
                                r"optimizer: 'adamw' -> 'sgd'"):
      train_lib.train_and_evaluate(
          self.config(num_steps=60, optimizer="sgd"), workdir)
    # Only `num_steps` changed: allowed.
    result = train_lib.train_and_evaluate(self.config(num_steps=60), workdir)
    self.assertEqual(result["step"], 60)

  def test_metrics_cut_at_every_offset_of_the_last_record(self):
    workdir = self.create_tempdir().full_path
    with metrics_lib.MetricWriter(workdir, tensorboard=False) as w:
      for step in (10, 20, 30, 40):
        w.write(step, {"train/loss": 1.0 / step})
    path = os.path.join(workdir, metrics_lib.METRICS_FILE)
    with open(path, "rb") as f:
      whole = f.read()
    last_start = whole.rindex(b"\n", 0, len(whole) - 1) + 1
    for cut in range(last_start, len(whole) + 1):
      with open(path, "wb") as f:
        f.write(whole[:cut])
      # The run resumes from the checkpoint of step 30 and redoes step 40.
      with metrics_lib.MetricWriter(workdir, resume_step=30,
                                    tensorboard=False) as w:
        w.write(40, {"train/loss": 1.0 / 40})
      steps = [r["step"] for r in metrics_lib.read_metrics(workdir)]
      self.assertEqual(steps, [10, 20, 30, 40], f"cut at byte {cut}")
      # Resumed from step 40 itself: a whole last record is kept as is.
      with open(path, "wb") as f:
        f.write(whole[:cut])
      with metrics_lib.MetricWriter(workdir, resume_step=40,
                                    tensorboard=False) as w:
        w.write(50, {"train/loss": 1.0 / 50})
      steps = [r["step"] for r in metrics_lib.read_metrics(workdir)]
      expected = ([10, 20, 30, 40, 50] if cut >= len(whole) - 1
                  else [10, 20, 30, 50])
      self.assertEqual(steps, expected, f"cut at byte {cut}")


if __name__ == "__main__":
  quick_exit.main()
