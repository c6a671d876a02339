"""Unit tests of the run-lifecycle pieces: lock, stop signals, divergence,
config changes on resume, storage checks."""

import errno
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np

from tools.trainer import divergence
from tools.trainer import preemption
from tools.trainer import resume_config
from tools.trainer import storage_checks
from tools.trainer import workdir_lock
import quick_exit  # tests/quick_exit.py, beside this file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_HOLD_LOCK = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {root!r})
    from tools.trainer import workdir_lock
    workdir_lock.WorkdirLock({workdir!r}).acquire()
    print("locked", flush=True)
    time.sleep(60)
""")


class WorkdirLockTest(absltest.TestCase):

  def _holder(self, workdir):
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK.format(root=ROOT, workdir=workdir)],
        stdout=subprocess.PIPE, text=True)
    self.addCleanup(proc.kill)
    self.assertEqual(proc.stdout.readline().strip(), "locked")
    return proc

  def test_second_holder_is_refused_with_pid_and_host(self):
    workdir = self.create_tempdir().full_path
    proc = self._holder(workdir)
    with self.assertRaisesRegex(workdir_lock.WorkdirLockedError,
                                rf"held by pid {proc.pid} on host .*\nFix:"):
      workdir_lock.WorkdirLock(workdir).acquire()

  def test_lock_of_a_killed_process_does_not_block(self):
    workdir = self.create_tempdir().full_path
    proc = self._holder(workdir)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    lock = workdir_lock.WorkdirLock(workdir).acquire()
    self.assertTrue(lock.held)
    with open(lock.path) as f:
      self.assertEqual(json.load(f)["pid"], os.getpid())
    lock.release()
    self.assertFalse(lock.held)


class StopRequestsTest(parameterized.TestCase):

  @parameterized.parameters(signal.SIGTERM, signal.SIGINT)
  def test_first_signal_is_recorded(self, signum):
    before = signal.getsignal(signum)
    with preemption.StopRequests() as stop:
      self.assertTrue(stop.installed)
      self.assertFalse(stop.requested)
      os.kill(os.getpid(), signum)
      self.assertTrue(stop.requested)
      self.assertEqual(stop.signal_name, signal.Signals(signum).name)
    self.assertIs(signal.getsignal(signum), before)

  def test_second_signal_ends_the_process(self):
    code = textwrap.dedent(f"""
        import os, signal, sys, time
        sys.path.insert(0, {ROOT!r})
        from tools.trainer import preemption
        stop = preemption.StopRequests().install()
        os.kill(os.getpid(), signal.SIGTERM)
        print("first", stop.requested, flush=True)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
        print("still alive", flush=True)
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True,
                         text=True, timeout=60)
    self.assertEqual(res.stdout.strip(), "first True")
    self.assertEqual(res.returncode, -signal.SIGTERM)


class DivergenceGuardTest(parameterized.TestCase):

  def test_healthy_decreasing_loss_passes(self):
    guard = divergence.DivergenceGuard(factor=10.0, window=5, warmup=2)
    for loss in np.geomspace(3.0, 0.01, 50):
      self.assertIsNone(guard.check(float(loss), grad_norm=1.0))

  @parameterized.parameters(
      (float("nan"), 1.0, "loss nan is not finite"),
      (float("inf"), 1.0, "loss inf is not finite"),
      (1.0, float("inf"), "gradient norm inf is not finite"),
      (1e33, 1.0, "above 10 x the running median 2"),
  )
  def test_divergence_is_named(self, loss, grad_norm, reason):
    guard = divergence.DivergenceGuard(factor=10.0, window=3, warmup=3)
    for _ in range(3):
      self.assertIsNone(guard.check(2.0))
    self.assertIn(reason, guard.check(loss, grad_norm))

  def test_diverged_losses_do_not_move_the_reference(self):
    guard = divergence.DivergenceGuard(factor=2.0, window=3, warmup=1)
    guard.check(1.0)
    for _ in range(5):
      self.assertIsNotNone(guard.check(5.0))
    self.assertIsNone(guard.check(1.5))

  def test_factor_zero_checks_only_finiteness(self):
    guard = divergence.DivergenceGuard(factor=0.0, warmup=0)
    guard.check(1.0)
    self.assertIsNone(guard.check(1e30))
    self.assertIsNotNone(guard.check(float("nan")))

  @parameterized.parameters(-1.0, 0.5, 1.0)
  def test_bad_factor(self, factor):
    with self.assertRaisesRegex(ValueError, "divergence_factor=10"):
      divergence.DivergenceGuard(factor=factor)


class ResumeConfigTest(absltest.TestCase):

  SAVED = {"optimizer": "adamw", "learning_rate": 1e-3, "num_steps": 100,
           "log_every": 10, "model_config": {"hidden_sizes": [8, 8]}}

  def test_free_keys_pass(self):
    new = dict(self.SAVED, num_steps=400, log_every=20)
    diffs = resume_config.check(self.SAVED, new, 50, allow_change=False)
    self.assertEqual([d.key for d in diffs], ["log_every", "num_steps"])

  def test_optimization_changes_are_listed_and_refused(self):
    new = dict(self.SAVED, optimizer="sgd",
               model_config={"hidden_sizes": (8, 16)})
    with self.assertRaises(resume_config.ConfigChangeError) as cm:
      resume_config.check(self.SAVED, new, 50, allow_change=False)
    msg = str(cm.exception)
    self.assertIn("model_config.hidden_sizes: [8, 8] -> [8, 16]", msg)
    self.assertIn("optimizer: 'adamw' -> 'sgd'", msg)
    self.assertIn("--allow_config_change", msg)
    self.assertIn("config.50.json", msg)
    diffs = resume_config.check(self.SAVED, new, 50, allow_change=True)
    self.assertLen(resume_config.refused(diffs), 2)

  def test_tuples_equal_lists(self):
    new = dict(self.SAVED, model_config={"hidden_sizes": (8, 8)})
    self.assertEqual(resume_config.differences(self.SAVED, new), [])

  def test_record_keeps_the_old_config(self):
    workdir = self.create_tempdir().full_path
    self.assertIsNone(resume_config.load(workdir))
    resume_config.record(workdir, self.SAVED, 0, changed=False)
    new = dict(self.SAVED, learning_rate=0.1)
    resume_config.record(workdir, new, 50, changed=True)
    self.assertEqual(resume_config.load(workdir)["learning_rate"], 0.1)
    with open(os.path.join(workdir, "config.50.json")) as f:
      self.assertEqual(json.load(f), self.SAVED)


class StorageChecksTest(parameterized.TestCase):

  TREE = {"w": np.zeros((256, 256), np.float32)}

  def test_room_is_estimated_from_array_bytes(self):
    need = storage_checks.preflight(self.create_tempdir().full_path,
                                    self.TREE, keep=2)
    self.assertEqual(need, 3 * 256 * 256 * 4)

  def test_not_enough_space(self):
    free = mock.Mock(free=1000)
    with mock.patch("shutil.disk_usage", return_value=free):
      with self.assertRaisesRegex(
          storage_checks.StorageError,
          r"need about 0\.8 MiB, 0\.0 MiB are free\.\nFix: .*lower "
          r"`keep_checkpoints`"):
        storage_checks.preflight(self.create_tempdir().full_path,
                                 self.TREE, keep=2)

  @parameterized.parameters(
      (errno.ENOSPC, "No space left on device", "free space there"),
      (errno.EACCES, "Permission denied", "make it writable"),
  )
  def test_unwritable_directory(self, err, text, fix):
    with mock.patch("builtins.open",
                    side_effect=OSError(err, os.strerror(err))):
      with self.assertRaisesRegex(storage_checks.StorageError,
                                  rf"{text}\.\nFix: {fix}"):
        storage_checks.preflight(tempfile.mkdtemp(), self.TREE, keep=1)


if __name__ == "__main__":
  quick_exit.main()
