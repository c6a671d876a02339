"""pax.sharding across processes; run by multihost_test.py.

Usage (one line per process, same port):
  python tests/multihost_collectives.py 127.0.0.1:PORT NUM_PROCESSES PROCESS_ID

Each process should have 2 CPU devices
(XLA_FLAGS=--xla_force_host_platform_device_count=2). Checks that a global
batch given whole on every process and one given as per-process slices
(`process_local=True`) become the same global array, that arrays split
across processes gather back with `to_host`, and that a jitted reduction
over them is right. Prints `ALL OK` on success.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position

import pax_haiku as pax  # pylint: disable=wrong-import-position


def main():
  address, num_processes, process_id = sys.argv[1], int(sys.argv[2]), int(
      sys.argv[3])
  assert pax.sharding.initialize_distributed(address, num_processes,
                                             process_id)
  assert jax.process_count() == num_processes, jax.process_count()
  mesh = pax.sharding.make_mesh()
  n = mesh.size
  assert n == jax.device_count() > jax.local_device_count(), n

  x = np.arange(4 * n * 3, dtype=np.float32).reshape(4 * n, 3)
  per_process = x.shape[0] // num_processes
  local = x[process_id * per_process:(process_id + 1) * per_process]
  a = pax.sharding.shard_batch(x, mesh)
  b = pax.sharding.shard_batch(local, mesh, process_local=True)
  assert not a.is_fully_addressable
  assert a.shape == b.shape == x.shape, (a.shape, b.shape)
  np.testing.assert_array_equal(pax.sharding.to_host(a), x)
  np.testing.assert_array_equal(pax.sharding.to_host(b), x)
  total = jax.jit(jnp.sum, out_shardings=pax.sharding.replicated_sharding(
      mesh))(b)
  np.testing.assert_allclose(pax.sharding.to_host(total), x.sum())

  net = pax.Linear(64, 32)
  sharded = pax.sharding.shard_params(net, mesh)
  assert not sharded.weight.is_fully_addressable
  back = pax.sharding.to_host(sharded)
  np.testing.assert_array_equal(back.weight, np.asarray(net.weight))
  replicated = pax.sharding.replicate(net, mesh)
  np.testing.assert_array_equal(pax.sharding.to_host(replicated).bias,
                                np.asarray(net.bias))

  try:
    pax.sharding.make_mesh(n - 1)
    raise AssertionError("an uneven mesh did not raise")
  except ValueError as e:
    assert "spread evenly" in str(e), e
  half = pax.sharding.make_mesh(num_processes)  # one device per process
  assert sorted(d.process_index for d in half.devices.flat) == list(
      range(num_processes))
  print("ALL OK", flush=True)


if __name__ == "__main__":
  main()
