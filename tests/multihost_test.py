"""Two processes on localhost (jax.distributed, gloo CPU collectives).

Each test starts its own `tools/train.py` processes on 127.0.0.1 with a free
port and 2 simulated CPU devices each (a 4-device global mesh), waits with
a timeout, and kills them on failure. The result must match a one-process,
one-device run of the same config (rtol 1e-5).
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from absl.testing import absltest
import numpy as np

from tools.trainer import checkpoint
from tools.trainer import train_lib
from configs import smoke

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = os.path.join(ROOT, "configs", "smoke.py")
TRAIN = os.path.join(ROOT, "tools", "train.py")
COLLECTIVES = os.path.join(ROOT, "tests", "multihost_collectives.py")
RTOL = 1e-5
ATOL = 1e-6
TIMEOUT_S = 240


def free_port():
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def env_for_process(devices_per_process):
  env = dict(os.environ)
  env["XLA_FLAGS"] = (
      env.get("XLA_FLAGS", "") +
      f" --xla_force_host_platform_device_count={devices_per_process}").strip()
  env["JAX_PLATFORMS"] = "cpu"
  for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES",
               "JAX_PROCESS_ID"):
    env.pop(name, None)
  return env


def run_processes(workdir=None, num_processes=2, devices_per_process=2,
                  extra_flags=(), timeout=TIMEOUT_S, command=None):
  """Runs `num_processes` processes; returns [(returncode, stdout, stderr)].

  By default each runs the binary on `workdir`; `command(address,
  num_processes, process_id)` gives another command line. Every process is
  killed if the group is not done within `timeout`, or once one fails.
  """
  address = f"127.0.0.1:{free_port()}"
  logdir = tempfile.mkdtemp(dir=absltest.get_default_test_tmpdir())
  procs, files = [], []
  try:
    for i in range(num_processes):
      if command is None:
        argv = [sys.executable, TRAIN, f"--config={SMOKE}",
                f"--workdir={workdir}", f"--coordinator_address={address}",
                f"--num_processes={num_processes}", f"--process_id={i}",
                *extra_flags]
      else:
        argv = command(address, num_processes, i)
      out = open(os.path.join(logdir, f"out{i}.txt"), "w+")
      err = open(os.path.join(logdir, f"err{i}.txt"), "w+")
      files.append((out, err))
      procs.append(subprocess.Popen(
          argv, stdout=out, stderr=err,
          env=env_for_process(devices_per_process)))
    deadline = time.monotonic() + timeout
    for p in procs:
      remaining = max(1.0, deadline - time.monotonic())
      try:
        p.wait(timeout=remaining)
      except subprocess.TimeoutExpired:
        break
      if p.returncode != 0:
        break  # The others would wait for it; don't wait for them.
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
  results = []
  for p, (out, err) in zip(procs, files):
    out.seek(0)
    err.seek(0)
    results.append((p.returncode, out.read(), err.read()))
    out.close()
    err.close()
  return results


def final_leaves(workdir):
  ckpt_dir = os.path.join(workdir, "checkpoints")
  step = checkpoint.latest_step(ckpt_dir)
  path = checkpoint.checkpoint_path(ckpt_dir, step)
  with np.load(os.path.join(path, checkpoint.ARRAYS_FILE)) as data:
    return step, [data[k] for k in sorted(data.files)]


def records(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(l) for l in f]


class MultiHostTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.one = os.path.join(absltest.get_default_test_tmpdir(),
                           "multihost_one_process")
    shutil.rmtree(cls.one, ignore_errors=True)
    config = smoke.get_config()
    config.num_devices = 1
    train_lib.train_and_evaluate(config, cls.one)

  def assert_ok(self, results):
    for i, (rc, out, err) in enumerate(results):
      self.assertEqual(rc, 0, f"process {i} failed (rc {rc}):\n{out[-2000:]}"
                       f"\n{err[-4000:]}")

  def assert_same_params(self, workdir):
    step_a, leaves_a = final_leaves(self.one)
    step_b, leaves_b = final_leaves(workdir)
    self.assertEqual(step_a, step_b)
    self.assertLen(leaves_b, len(leaves_a))
    for a, b in zip(leaves_a, leaves_b):
      np.testing.assert_allclose(b, a, rtol=RTOL, atol=ATOL)

  def test_two_processes_train_like_one(self):
    workdir = os.path.join(self.create_tempdir().full_path, "w")
    results = run_processes(workdir)
    self.assert_ok(results)
    (_, out0, _), (_, out1, _) = results
    self.assertIn("on 4 device(s), 2 process(es)", out0)
    self.assertNotIn("Final test metrics", out1)  # Only process 0 reports.
    self.assert_same_params(workdir)
    # Only process 0 wrote metrics: each step once, and the curve matches.
    mine, ref = records(workdir), records(self.one)
    self.assertEqual([r["step"] for r in mine], [r["step"] for r in ref])
    for name in ("train/loss", "test/loss"):
      got = [r[name] for r in mine if name in r]
      want = [r[name] for r in ref if name in r]
      self.assertNotEmpty(want)
      np.testing.assert_allclose(got, want, rtol=RTOL, err_msg=name)
    self.assertLen(os.listdir(os.path.join(workdir, "tensorboard")), 1)
    leftovers = [n for n in os.listdir(workdir) if n.startswith(".write")]
    self.assertEmpty(leftovers)

  def test_two_processes_resume_a_one_process_checkpoint_sharded(self):
    workdir = os.path.join(self.create_tempdir().full_path, "w")
    shutil.copytree(self.one, workdir)
    ckpt_dir = os.path.join(workdir, "checkpoints")
    for step in checkpoint.checkpoint_steps(ckpt_dir):
      if step > 60:
        shutil.rmtree(checkpoint.checkpoint_path(ckpt_dir, step))
    # Both processes restore step 60; parameters split over 4 devices on 2
    # processes are gathered for each checkpoint.
    results = run_processes(workdir,
                            extra_flags=["--config.param_sharding=sharded"])
    self.assert_ok(results)
    self.assertIn("Resumed from", results[0][1])
    self.assertIn("(step 60)", results[0][1])
    self.assert_same_params(workdir)
    # Records up to step 60 kept, later ones written once (by process 0).
    self.assertEqual([r["step"] for r in records(workdir)],
                     [r["step"] for r in records(self.one)])

  def test_library_across_processes(self):
    results = run_processes(command=lambda address, n, i: [
        sys.executable, COLLECTIVES, address, str(n), str(i)])
    self.assert_ok(results)
    for _, out, _ in results:
      self.assertIn("ALL OK", out)

  def test_bad_multiprocess_flags_are_clear_errors(self):
    proc = subprocess.run(
        [sys.executable, TRAIN, f"--config={SMOKE}",
         f"--workdir={self.create_tempdir().full_path}",
         "--coordinator_address=127.0.0.1:1", "--num_processes=2"],
        env=env_for_process(1), capture_output=True, text=True, timeout=120,
        check=False)
    self.assertEqual(proc.returncode, 2, proc.stderr[-2000:])  # Usage error.
    self.assertIn("process_id missing", proc.stderr)
    self.assertIn("--process_id=I", proc.stderr)


if __name__ == "__main__":
  absltest.main()
