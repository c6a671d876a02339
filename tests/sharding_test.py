"""pax.sharding and the data-parallel binary: 8 simulated devices vs 1.

Runs needing 8 CPU devices start a subprocess with
`XLA_FLAGS=--xla_force_host_platform_device_count=8` (the flag only counts
before JAX starts; this process may already have JAX with one device).
"""

import json
import os
import shutil
import sys
from unittest import mock

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np
import optax

import pax_haiku as pax
from tools.trainer import checkpoint
from tools.trainer import config_schema
from tools.trainer import train_lib
from configs import smoke
import launch  # tests/launch.py, beside this file
import quick_exit  # tests/quick_exit.py, beside this file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = os.path.join(ROOT, "configs", "smoke.py")
CHECKS = os.path.join(ROOT, "tests", "multihost_sharding_checks.py")
RTOL = 1e-5
# Parameters near 0 differ by a few float32 ulps of the typical value.
ATOL = 1e-6


def device_env(n):
  env = dict(os.environ)
  env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                      f" --xla_force_host_platform_device_count={n}").strip()
  env["JAX_PLATFORMS"] = "cpu"
  return env


def run_binary(workdir, num_simulated_devices, *flags):
  """tools/train.py as a process (forked: tests/launch.py)."""
  return launch.run(
      [sys.executable, os.path.join(ROOT, "tools", "train.py"),
       f"--config={SMOKE}", f"--workdir={workdir}", *flags],
      env=device_env(num_simulated_devices), capture_output=True, text=True,
      timeout=240)


def final_leaves(workdir):
  ckpt_dir = os.path.join(workdir, "checkpoints")
  step = checkpoint.latest_step(ckpt_dir)
  data = checkpoint.load_arrays(ckpt_dir, step)
  return step, [data[k] for k in sorted(data)]


def curve(workdir, name):
  records = [json.loads(l) for l in open(os.path.join(workdir,
                                                      "metrics.jsonl"))]
  return [(r["step"], r[name]) for r in records if name in r]


def keep_checkpoints_up_to(src, dst, step):
  """Copies workdir `src` to `dst` without the checkpoints after `step`."""
  shutil.copytree(src, dst)
  ckpt_dir = os.path.join(dst, "checkpoints")
  for s in checkpoint.checkpoint_steps(ckpt_dir):
    if s > step:
      shutil.rmtree(checkpoint.checkpoint_path(ckpt_dir, s))


def smoke_config(**overrides):
  config = smoke.get_config()
  for k, v in overrides.items():
    config[k] = v
  return config


class ShardingLibraryTest(absltest.TestCase):
  """What runs on this process's devices (one is enough)."""

  def test_make_mesh(self):
    mesh = pax.sharding.make_mesh()
    self.assertEqual(mesh.axis_names, ("data",))
    self.assertEqual(mesh.size, jax.device_count())
    self.assertEqual(pax.sharding.make_mesh(0).size, jax.device_count())
    self.assertEqual(pax.sharding.make_mesh(1, axis_name="batch").axis_names,
                     ("batch",))

  def test_make_mesh_errors(self):
    n = jax.device_count()
    with self.assertRaisesRegex(
        ValueError, rf"(?s)asked for {n + 1} devices but only {n} cpu.*"
        "xla_force_host_platform_device_count"):
      pax.sharding.make_mesh(n + 1)
    with self.assertRaisesRegex(ValueError, ">= 0"):
      pax.sharding.make_mesh(-1)
    with self.assertRaisesRegex(TypeError, "must be an int"):
      pax.sharding.make_mesh(2.0)
    with self.assertRaisesRegex(TypeError, "(?s)replicate: `mesh` must be a "
                                "jax.sharding.Mesh, got str.*make_mesh"):
      pax.sharding.replicate({"a": np.zeros(2)}, "data")

  def test_shard_batch_errors(self):
    mesh = pax.sharding.make_mesh(1)
    with self.assertRaisesRegex(ValueError,
                                r"\['y'\] has shape \(\), with no axis 0"):
      pax.sharding.shard_batch({"x": np.zeros((4, 2)), "y": np.float32(1)},
                               mesh)
    with self.assertRaisesRegex(ValueError, "batch_axis"):
      pax.sharding.shard_batch(np.zeros((4,)), mesh, batch_axis=1)
    with self.assertRaisesRegex(ValueError, "no axis 'model'.*'data'"):
      pax.sharding.shard_batch(np.zeros((4,)), mesh, axis_name="model")
    with self.assertRaisesRegex(ValueError, "holds no arrays"):
      pax.sharding.shard_batch({}, mesh)

  def test_replicated_training_equals_plain_training(self):
    mesh = pax.sharding.make_mesh(1)

    def loss_fn(model, x):
      model, y = pax.purecall(model, x)
      loss = jnp.mean(y ** 2)
      return loss, (loss, model)

    update_fn = jax.jit(pax.build_update_fn(loss_fn))
    net = pax.Linear(3, 2)
    optimizer = pax.from_optax(optax.adam(1e-2))(net.parameters())
    placed = pax.sharding.replicate((net, optimizer), mesh)
    self.assertIsInstance(placed[0], pax.Linear)
    self.assertTrue(placed[0].weight.sharding.is_fully_replicated)
    x = np.ones((4, 3), np.float32)
    a = update_fn(net, optimizer, x)
    b = update_fn(*placed, pax.sharding.shard_batch(x, mesh))
    for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
      np.testing.assert_array_equal(u, v)
    host = pax.sharding.to_host(b[0])
    self.assertIsInstance(host, pax.Linear)
    self.assertIsInstance(host.weight, np.ndarray)

  def test_shard_params_keeps_small_leaves_replicated(self):
    mesh = pax.sharding.make_mesh(1)
    net = pax.sharding.shard_params(pax.Linear(64, 32), mesh)
    np.testing.assert_array_equal(net.weight.shape, (64, 32))
    self.assertTrue(net.bias.sharding.is_fully_replicated)

  def test_initialize_distributed_validates_before_joining(self):
    init = pax.sharding.initialize_distributed
    with mock.patch.dict(os.environ, {}, clear=False):
      for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES",
                   "JAX_PROCESS_ID"):
        os.environ.pop(name, None)
      self.assertFalse(init())  # A single-process run: nothing to join.
      with self.assertRaisesRegex(ValueError, "without a coordinator address"):
        init(num_processes=2, process_id=1)
      with self.assertRaisesRegex(ValueError, "num_processes and process_id "
                                  "missing"):
        init("127.0.0.1:1234")
      with self.assertRaisesRegex(ValueError, "not HOST:PORT"):
        init("127.0.0.1", 2, 0)
      with self.assertRaisesRegex(ValueError, r"in \[0, num_processes\)"):
        init("127.0.0.1:1234", 2, 2)
      os.environ["JAX_NUM_PROCESSES"] = "two"
      with self.assertRaisesRegex(ValueError, "JAX_NUM_PROCESSES='two'"):
        init("127.0.0.1:1234", process_id=0)
    self.assertFalse(jax.distributed.is_initialized())

  def test_config_keys_are_validated(self):
    config = smoke_config(num_devices=-1)
    with self.assertRaisesRegex(ValueError, "`num_devices` must be an integer"
                                " >= 0"):
      config_schema.validate(config)
    config = smoke_config(param_sharding="fsdp")
    with self.assertRaisesRegex(ValueError, "`param_sharding` must be one of "
                                r"\['replicated', 'sharded'\]"):
      config_schema.validate(config)
    config = smoke_config(num_devices=jax.device_count() + 1)
    with self.assertRaisesRegex(ValueError, r"(?s)config.num_devices=\d+: .*"
                                "xla_force_host_platform_device_count"):
      train_lib.train_and_evaluate(config, self.create_tempdir().full_path)


class DataParallelTest(absltest.TestCase):
  """8 simulated devices (subprocesses) against 1 device (this process)."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    tmp = absltest.get_default_test_tmpdir()
    cls.one = os.path.join(tmp, "sharding_one_device")
    shutil.rmtree(cls.one, ignore_errors=True)
    cls.result = train_lib.train_and_evaluate(smoke_config(num_devices=1),
                                              cls.one)
    cls.eight = os.path.join(tmp, "sharding_eight_devices")
    shutil.rmtree(cls.eight, ignore_errors=True)
    cls.proc = run_binary(cls.eight, 8)

  def assert_same_params(self, workdir_a, workdir_b):
    step_a, leaves_a = final_leaves(workdir_a)
    step_b, leaves_b = final_leaves(workdir_b)
    self.assertEqual(step_a, step_b)
    self.assertLen(leaves_b, len(leaves_a))
    for a, b in zip(leaves_a, leaves_b):
      np.testing.assert_allclose(b, a, rtol=RTOL, atol=ATOL)

  def test_library_checks_on_8_devices(self):
    proc = launch.run([sys.executable, CHECKS], env=device_env(8),
                      capture_output=True, text=True, timeout=240)
    self.assertEqual(proc.returncode, 0, proc.stderr[-4000:])
    self.assertIn("ALL OK", proc.stdout)

  def test_8_devices_give_the_1_device_curve_and_params(self):
    self.assertEqual(self.proc.returncode, 0, self.proc.stderr[-4000:])
    self.assertIn("on 8 device(s), 1 process(es)", self.proc.stdout)
    self.assertEqual(self.result["num_devices"], 1)
    for name in ("train/loss", "train/accuracy", "test/loss"):
      one, eight = curve(self.one, name), curve(self.eight, name)
      self.assertEqual([s for s, _ in one], [s for s, _ in eight])
      self.assertNotEmpty(one)
      np.testing.assert_allclose([v for _, v in eight], [v for _, v in one],
                                 rtol=RTOL, err_msg=name)
    self.assert_same_params(self.one, self.eight)

  def test_checkpoint_from_8_devices_resumes_on_1(self):
    self.assertEqual(self.proc.returncode, 0, self.proc.stderr[-4000:])
    workdir = os.path.join(self.create_tempdir().full_path, "w")
    keep_checkpoints_up_to(self.eight, workdir, 60)
    result = train_lib.train_and_evaluate(smoke_config(num_devices=1), workdir)
    self.assertEqual(result["num_devices"], 1)
    self.assert_same_params(self.one, workdir)

  def test_checkpoint_from_1_device_resumes_on_8_with_sharded_params(self):
    workdir = os.path.join(self.create_tempdir().full_path, "w")
    keep_checkpoints_up_to(self.one, workdir, 60)
    proc = run_binary(workdir, 8, "--config.param_sharding=sharded")
    self.assertEqual(proc.returncode, 0, proc.stderr[-4000:])
    self.assertIn("step 60", proc.stdout)  # "Resumed from ... (step 60)."
    self.assertIn("on 8 device(s)", proc.stdout)
    self.assertNotIn("different config", proc.stderr)
    self.assert_same_params(self.one, workdir)

  def test_batch_not_divisible_by_devices_is_a_clear_error(self):
    proc = run_binary(self.create_tempdir().full_path, 8,
                      "--config.batch_size=30", "--config.num_steps=10")
    self.assertEqual(proc.returncode, 2)  # A usage error.
    self.assertIn("batch size (config.batch_size) 30 is not divisible by the "
                  "number of devices 8", proc.stderr)
    self.assertIn("multiple of 8 (e.g. 24 or 32)", proc.stderr)
    self.assertIn("--config.num_devices", proc.stderr)


if __name__ == "__main__":
  quick_exit.main()
