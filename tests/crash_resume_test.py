"""Crash safety: SIGKILL the training binary 20 times, resume, compare bits.

A reference run trains configs/smoke.py without interruption. Then one
workdir at a time is trained by `tests/reliability_crash_runner.py`
processes that die by SIGKILL at seeded random moments: either a random
delay after the training loop starts (training, evaluating, writing metrics
or checkpoints, or after the run ended), or forced at a chosen phase inside a
checkpoint save (orbax writing the arrays in its background thread, before
orbax's atomic rename, after it but before the manifest, with the manifest
half written, before or while pruning old checkpoints). Each kill
is followed by a restart in the same workdir; a workdir whose run finishes is
compared with the reference and a new one is started. The first kill is
always in the first save, before its manifest (the restart then has no
finished checkpoint and starts afresh). After 20 kills the last
workdir is run to completion. Every finished workdir must hold the reference's
final checkpoint bit for bit (model, optimizer and data position).

Restarts share a persistent JAX compilation cache, so that a restart costs
seconds rather than recompiling, and every run is forked from a server that
has imported the trainer once (tests/fork_server.py): each run is still a
process of its own that starts training from scratch or from its workdir's
checkpoints, but does not spend ~2 s of CPU on imports.
"""

import json
import os
import random
import signal
import subprocess
import time

from absl import logging
from absl.testing import absltest
import numpy as np

from tools.trainer import checkpoint
import fork_server  # tests/fork_server.py, beside this file
import launch  # tests/launch.py, beside this file
import quick_exit  # tests/quick_exit.py, beside this file

ROOT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
RUNNER = os.path.join(ROOT, "tests", "reliability_crash_runner.py")
PHASES = ("mid_write", "before_commit", "before_manifest", "manifest_half",
          "before_prune", "during_prune")
NUM_KILLS = 20
NUM_STEPS = 100  # configs/smoke.py: checkpoints every 20 steps, keeps 3.
CHECKPOINT_EVERY = 20
SEED = 20240601


def final_checkpoint(workdir):
  directory = os.path.join(workdir, "checkpoints")
  step = checkpoint.latest_step(directory, verify_integrity=True)
  arrays = checkpoint.load_arrays(directory, step)
  return step, arrays, checkpoint.read_metadata(directory, step)


class CrashResumeTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.tmp = self.create_tempdir().full_path
    self.env = dict(
        os.environ, PYTHONPATH=ROOT,
        # The suite's shared cache when tools/test.sh set one.
        JAX_COMPILATION_CACHE_DIR=(os.environ.get("JAX_COMPILATION_CACHE_DIR")
                                   or os.path.join(self.tmp, "jax_cache")),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    self.runs = 0
    # The modules the runner imports, and those a run imports on first use.
    self.server = fork_server.ForkServer(
        ["orbax.checkpoint._src.path.atomicity", "configs.smoke",
         "tools.trainer.checkpoint", "tools.trainer.checkpoint_manifest",
         "tools.trainer.train_lib", *launch.FIRST_USE],
        env=self.env, cwd=ROOT,
        log_path=os.path.join(self.tmp, "fork_server.log"))
    self.addCleanup(self.server.close)

  def start(self, workdir, kill):
    """Starts a runner; returns (process, ready_file)."""
    self.runs += 1
    ready = os.path.join(self.tmp, f"ready_{self.runs}")
    proc = self.server.start(RUNNER, [workdir, ready, kill],
                             os.path.join(self.tmp, f"run_{self.runs}.log"))
    return proc, ready

  def log_tail(self):
    with open(os.path.join(self.tmp, f"run_{self.runs}.log")) as f:
      return f.read()[-3000:]

  def run_to_completion(self, workdir):
    proc, _ = self.start(workdir, "none")
    self.assertEqual(proc.wait(timeout=300), 0, self.log_tail())

  def kill_after_delay(self, workdir, delay):
    """Kills the runner `delay` s into its training loop; True if killed."""
    proc, ready = self.start(workdir, "none")
    deadline = time.monotonic() + 300
    while not os.path.exists(ready) and proc.poll() is None:
      self.assertLess(time.monotonic(), deadline)
      time.sleep(0.02)
    try:
      proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
      proc.send_signal(signal.SIGKILL)
      # The runner may have finished between the timeout and the signal.
      if proc.wait(timeout=60) != 0:
        self.assertEqual(proc.returncode, -signal.SIGKILL, self.log_tail())
        return True
    self.assertEqual(proc.returncode, 0, self.log_tail())
    return False

  def kill_inside_save(self, workdir, save_index, phase):
    proc, _ = self.start(workdir, f"{save_index}:{phase}")
    self.assertEqual(proc.wait(timeout=300), -signal.SIGKILL,
                     self.log_tail())

  def assert_same_as_reference(self, workdir, reference):
    step, leaves, user = final_checkpoint(workdir)
    ref_step, ref_leaves, ref_user = reference
    self.assertEqual(step, ref_step)
    self.assertEqual(sorted(leaves), sorted(ref_leaves))  # Same names.
    for name in ref_leaves:
      a, b = leaves[name], ref_leaves[name]
      self.assertEqual(a.dtype, b.dtype)
      np.testing.assert_array_equal(a, b)  # Bit-identical (same dtype).
      self.assertEqual(a.tobytes(), b.tobytes())
    self.assertEqual(user, ref_user)
    records = [json.loads(l) for l in open(os.path.join(workdir,
                                                        "metrics.jsonl"))]
    steps = [r["step"] for r in records]
    self.assertEqual(steps, sorted(steps))
    self.assertEqual(max(steps), NUM_STEPS)

  def test_twenty_kills_resume_bit_identical(self):
    start_time = time.monotonic()
    reference_dir = os.path.join(self.tmp, "reference")
    self.run_to_completion(reference_dir)
    reference = final_checkpoint(reference_dir)
    self.assertEqual(reference[0], NUM_STEPS)

    rng = random.Random(SEED)
    kills = []
    finished = []
    chain = 0
    workdir = os.path.join(self.tmp, "chain_0")
    # The first kill is fixed: in the first save, after orbax's commit and
    # before the manifest, so the restart finds no finished checkpoint.
    self.kill_inside_save(workdir, 1, "before_manifest")
    kills.append("chain 0 from step None: save #1 at before_manifest")
    while len(kills) < NUM_KILLS:
      latest = checkpoint.latest_step(os.path.join(workdir, "checkpoints"),
                                      verify_integrity=True)
      remaining = (NUM_STEPS - (latest or 0)) // CHECKPOINT_EVERY
      if remaining == 0:  # Done: the last kill came after the final save.
        self.run_to_completion(workdir)
        finished.append(workdir)
        chain += 1
        workdir = os.path.join(self.tmp, f"chain_{chain}")
        continue
      if rng.random() < 0.5:
        phase = rng.choice(PHASES)
        index = rng.randint(1, remaining)
        self.kill_inside_save(workdir, index, phase)
        kills.append(f"chain {chain} from step {latest}: save #{index} at "
                     f"{phase}")
      else:
        delay = rng.uniform(0.0, 1.5)
        if self.kill_after_delay(workdir, delay):
          kills.append(f"chain {chain} from step {latest}: {delay:.2f} s "
                       "into the loop")
        else:  # It finished before the timer: compare and start a new one.
          finished.append(workdir)
          chain += 1
          workdir = os.path.join(self.tmp, f"chain_{chain}")
    self.run_to_completion(workdir)
    finished.append(workdir)
    logging.warning("%d kills over %d runs, %d finished workdirs, %.0f s:\n  %s",
                 len(kills), self.runs, len(finished),
                 time.monotonic() - start_time, "\n  ".join(kills))
    for w in finished:
      self.assert_same_as_reference(w, reference)
    self.assertGreaterEqual(
        sum(1 for k in kills if " at " in k), 5,
        "too few kills inside checkpoint writes")


if __name__ == "__main__":
  quick_exit.main()
