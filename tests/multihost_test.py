"""Two processes on localhost (jax.distributed, gloo CPU collectives).

Each test starts its own `tools/train.py` processes (forked from a server
that imported the trainer once: tests/launch.py) on 127.0.0.1 with a free
port and 2 (or 4) simulated CPU devices each, waits with a timeout, and
kills them on failure. The result must match a one-process run of the same
config (rtol 1e-5). Checkpoints are orbax checkpoints: each process writes
its own shards, and a run resumes on another process and device count.
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
import tensorstore

from tools.trainer import checkpoint
from tools.trainer import pipeline
from tools.trainer import train_lib
from configs import smoke
import launch  # tests/launch.py, beside this file
import quick_exit  # tests/quick_exit.py, beside this file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = os.path.join(ROOT, "configs", "smoke.py")
TRAIN = os.path.join(ROOT, "tools", "train.py")
COLLECTIVES = os.path.join(ROOT, "tests", "multihost_collectives.py")
DATA_SHARDS = os.path.join(ROOT, "tests", "multihost_data_shards.py")
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
  procs = []
  try:
    for i in range(num_processes):
      if command is None:
        argv = [sys.executable, TRAIN, f"--config={SMOKE}",
                f"--workdir={workdir}", f"--coordinator_address={address}",
                f"--num_processes={num_processes}", f"--process_id={i}",
                *extra_flags]
      else:
        argv = command(address, num_processes, i)
      # Forked from a server that imported the trainer once.
      procs.append(launch.Popen(
          argv, stdout=launch.PIPE, stderr=launch.PIPE, text=True,
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
  return [(p.returncode, *p.communicate()) for p in procs]


def final_leaves(workdir):
  ckpt_dir = os.path.join(workdir, "checkpoints")
  step = checkpoint.latest_step(ckpt_dir, verify_integrity=True)
  data = checkpoint.load_arrays(ckpt_dir, step)
  return step, [data[k] for k in sorted(data)]


def process_chunks(step_dir):
  """{process index: {array: chunk ids}} of what each process wrote.

  orbax's OCDBT format gives every process its own key-value store,
  `arrays/ocdbt.process_<i>/`, holding the zarr chunks (one per shard) that
  process wrote, under `<array name>/<chunk id>`.
  """
  arrays = os.path.join(step_dir, checkpoint.ARRAYS_ITEM)
  out = {}
  for name in os.listdir(arrays):
    if not name.startswith("ocdbt.process_"):
      continue
    store = tensorstore.KvStore.open({
        "driver": "ocdbt",
        "base": "file://" + os.path.join(arrays, name) + "/"}).result()
    chunks = {}
    for key in store.list().result():
      array, chunk = key.decode().rsplit("/", 1)
      if not chunk.startswith("."):  # .zarray: the array's metadata.
        chunks.setdefault(array, set()).add(chunk)
    out[int(name.rsplit("_", 1)[1])] = chunks
  return out


def records(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(l) for l in f]


class MultiHostTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    # A fresh directory: the default test tmpdir may be shared by other runs.
    cls.one = os.path.join(
        tempfile.mkdtemp(dir=absltest.get_default_test_tmpdir()),
        "multihost_one_process")
    config = smoke.get_config()
    config.num_devices = 1
    train_lib.train_and_evaluate(config, cls.one)

  def assert_ok(self, results):
    # A process that failed on its own first: the group is then killed
    # (rc -9), which says nothing about why.
    order = sorted(range(len(results)), key=lambda i: results[i][0] == -9)
    for i in order:
      rc, out, err = results[i]
      self.assertEqual(
          rc, 0, f"process {i} failed (rc {rc}; all: "
          f"{[r[0] for r in results]}):\n{out[-2000:]}\n{err[-4000:]}")

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
    # Both processes restore step 60 into parameters split over 4 devices
    # on 2 processes; each process then writes its own shards.
    results = run_processes(workdir,
                            extra_flags=["--config.param_sharding=sharded"])
    self.assert_ok(results)
    self.assertIn("Resumed from", results[0][1])
    self.assertIn("(step 60)", results[0][1])
    self.assert_same_params(workdir)
    # Records up to step 60 kept, later ones written once (by process 0).
    self.assertEqual([r["step"] for r in records(workdir)],
                     [r["step"] for r in records(self.one)])

  def test_sharded_two_process_checkpoint_resumes_on_one_process(self):
    # 2 processes x 4 devices, parameters split over all 8 devices: each
    # process writes its own shards, nothing is gathered.
    workdir = os.path.join(self.create_tempdir().full_path, "w")
    results = run_processes(workdir, devices_per_process=4,
                            extra_flags=["--config.param_sharding=sharded"])
    self.assert_ok(results)
    self.assertIn("on 8 device(s), 2 process(es)", results[0][1])
    ckpt_dir = os.path.join(workdir, "checkpoints")
    written = process_chunks(checkpoint.checkpoint_path(ckpt_dir, 60))
    self.assertEqual(sorted(written), [0, 1])
    # Every chunk (shard) was written once, by one process.
    for array in set(written[0]) & set(written[1]):
      self.assertEmpty(written[0][array] & written[1][array], array)
    # The (64, 32) kernel and its Adam moments are split by rows over the 8
    # devices (8 chunks of 8 rows); the mesh lists process 0's 4 devices
    # first. Each process wrote exactly its 4 row blocks.
    # The optax chain: record_grad_norm, clip_by_global_norm, adamw.
    split = ["model.params.sequential/~/linear.w",
             "optimizer.2.0.mu.sequential/~/linear.w",
             "optimizer.2.0.nu.sequential/~/linear.w"]
    for array in split:
      self.assertEqual(written[0][array], {f"{i}.0" for i in range(4)})
      self.assertEqual(written[1][array], {f"{i}.0" for i in range(4, 8)})
    # Replicated leaves are written once in all (disjoint chunks, checked
    # above): orbax splits the writing of a replicated array over the
    # processes holding it (each writes a slice of its own copy), and lets
    # process 0 write one too small to split.
    names = set(written[0]) | set(written[1])
    self.assertLen(names, len(checkpoint.load_arrays(ckpt_dir, 60)))
    self.assertEqual(written[1].get("optimizer.2.0.count"), None)
    self.assertEqual(written[0]["optimizer.2.0.count"], {"0"})
    self.assertEqual(written[0]["model.params.sequential/~/linear.b"] |
                     written[1]["model.params.sequential/~/linear.b"],
                     {str(i) for i in range(8)})

    # Resume step 60 on 1 process x 8 devices: the next logged loss (step
    # 70) and the final parameters match the 2-process run.
    one = os.path.join(self.create_tempdir().full_path, "w")
    shutil.copytree(workdir, one)
    for step in checkpoint.checkpoint_steps(os.path.join(one, "checkpoints")):
      if step > 60:
        shutil.rmtree(checkpoint.checkpoint_path(
            os.path.join(one, "checkpoints"), step))
    proc = launch.run(
        [sys.executable, TRAIN, f"--config={SMOKE}", f"--workdir={one}",
         "--config.param_sharding=sharded"],
        env=env_for_process(8), capture_output=True, text=True,
        timeout=TIMEOUT_S)
    self.assertEqual(proc.returncode, 0, proc.stderr[-4000:])
    self.assertIn("(step 60)", proc.stdout)
    self.assertIn("on 8 device(s), 1 process(es)", proc.stdout)
    want = {r["step"]: r for r in records(workdir)}
    got = {r["step"]: r for r in records(one)}
    self.assertEqual(sorted(got), sorted(want))
    np.testing.assert_allclose(got[70]["train/loss"], want[70]["train/loss"],
                               rtol=RTOL)
    _, leaves_a = final_leaves(workdir)
    _, leaves_b = final_leaves(one)
    for a, b in zip(leaves_a, leaves_b):
      np.testing.assert_allclose(b, a, rtol=RTOL, atol=ATOL)

  def test_library_across_processes(self):
    results = run_processes(command=lambda address, n, i: [
        sys.executable, COLLECTIVES, address, str(n), str(i)])
    self.assert_ok(results)
    for _, out, _ in results:
      self.assertIn("ALL OK", out)

  def test_processes_read_disjoint_shards_of_the_global_batch(self):
    out_dir = self.create_tempdir().full_path
    results = run_processes(command=lambda address, n, i: [
        sys.executable, DATA_SHARDS, address, str(n), str(i), out_dir])
    self.assert_ok(results)
    shares = []
    for i in range(2):
      with open(os.path.join(out_dir, f"process_{i}.json")) as f:
        shares.append(json.load(f))
    config = smoke.get_config()
    self.assertEqual([s["rows"] for s in shares], [[0, 16], [16, 32]])
    self.assertTrue(all(s["read_matches"] for s in shares))
    source, _ = train_lib.load_dataset(config)
    one = pipeline.TrainPipeline(source, global_batch_size=config.batch_size,
                                 seed=config.seed)
    for b in range(12):
      part0, part1 = (shares[0]["indices"][b], shares[1]["indices"][b])
      self.assertEmpty(set(part0) & set(part1))
      self.assertEqual(part0 + part1, one.indices(b).tolist())

  def test_bad_multiprocess_flags_are_clear_errors(self):
    proc = launch.run(
        [sys.executable, TRAIN, f"--config={SMOKE}",
         f"--workdir={self.create_tempdir().full_path}",
         "--coordinator_address=127.0.0.1:1", "--num_processes=2"],
        env=env_for_process(1), capture_output=True, text=True, timeout=120)
    self.assertEqual(proc.returncode, 2, proc.stderr[-2000:])  # Usage error.
    self.assertIn("process_id missing", proc.stderr)
    self.assertIn("--process_id=I", proc.stderr)


if __name__ == "__main__":
  quick_exit.main()
