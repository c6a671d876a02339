"""pax.sharding checks that need several devices; run by sharding_test.py.

Usage: XLA_FLAGS=--xla_force_host_platform_device_count=8 \\
           python tests/multihost_sharding_checks.py

(The device count must be set before JAX starts, hence a subprocess.) Exits
non-zero with an explanation if a check fails; prints `ALL OK` otherwise.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position
import optax  # pylint: disable=wrong-import-position

import pax_haiku as pax  # pylint: disable=wrong-import-position

RTOL = 1e-5
ATOL = 1e-6


def check(cond, message):
  if not cond:
    raise AssertionError(message)


def build():
  pax.seed_rng_key(0)
  net = pax.Sequential(
      # No bias before BatchNorm: its true gradient is 0, so Adam would
      # amplify float noise into updates that differ with the device count.
      pax.Linear(16, 128, with_bias=False), pax.BatchNorm1D(128), jax.nn.relu,
      pax.Dropout(0.2), lambda x: x.reshape(x.shape[0], -1),
      pax.Linear(4 * 128, 10))
  optimizer = pax.from_optax(optax.adam(1e-2))(net.parameters())
  return net, optimizer


def loss_fn(model, batch):
  x, y = batch
  model, logits = pax.purecall(model, x)
  loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))
  return loss, (loss, model)


def train(mesh, place, steps=8, k=5, batch=64):
  """`steps` chunks of `k` steps on `mesh`; returns (losses, host params)."""
  net, optimizer = place((build()), mesh)
  update_fn = pax.build_update_fn(loss_fn, scan_mode=True)

  @jax.jit
  def chunk_fn(net, optimizer, batches):
    (net, optimizer), losses = jax.lax.scan(update_fn, (net, optimizer),
                                            batches)
    return net, optimizer, losses

  rng = np.random.default_rng(0)
  losses = []
  for _ in range(steps):
    x = rng.normal(size=(k, batch, 4, 16)).astype(np.float32)
    y = rng.integers(0, 10, size=(k, batch)).astype(np.int32)
    chunk = pax.sharding.shard_batch((x, y), mesh, batch_axis=1)
    net, optimizer, l = chunk_fn(net, optimizer, chunk)
    losses.extend(pax.sharding.to_host(l).tolist())
  return np.array(losses), pax.sharding.to_host((net, optimizer))


def main():
  check(jax.device_count() == 8,
        f"run with 8 simulated devices, got {jax.device_count()}")
  mesh8 = pax.sharding.make_mesh()
  mesh1 = pax.sharding.make_mesh(1)
  check(mesh8.size == 8 and mesh1.size == 1, "mesh sizes")
  check(pax.sharding.make_mesh(4).size == 4, "make_mesh(4)")

  # Batches: each device holds its slice of the global batch.
  x = pax.sharding.shard_batch(np.arange(64.0).reshape(16, 4), mesh8)
  shapes = {s.data.shape for s in x.addressable_shards}
  check(shapes == {(2, 4)}, f"per-device shard shapes {shapes}")
  np.testing.assert_array_equal(pax.sharding.to_host(x),
                                np.arange(64.0).reshape(16, 4))
  chunk = pax.sharding.shard_batch(np.zeros((3, 16, 4)), mesh8, batch_axis=1)
  check({s.data.shape for s in chunk.addressable_shards} == {(3, 2, 4)},
        "chunk shards")
  try:
    pax.sharding.shard_batch(np.zeros((30, 4)), mesh8)
    raise AssertionError("batch 30 on 8 devices did not raise")
  except ValueError as e:
    check("30" in str(e) and "8" in str(e) and "multiple of 8" in str(e),
          f"unclear error: {e}")

  # Replicated: a full copy on each device.
  net, _ = pax.sharding.replicate(build(), mesh8)
  w = net[0].weight
  check(w.sharding.is_fully_replicated and len(w.addressable_shards) == 8,
        "replicate")

  # Sharded parameters: large leaves split, small ones replicated, optax
  # moments laid out like the parameters.
  net, optimizer = pax.sharding.shard_params(build(), mesh8)
  w = net[0].weight  # (16, 128): split on its largest dim.
  check(tuple(w.sharding.spec) == (None, "data"),
        f"weight spec {w.sharding.spec}")
  check({s.data.shape for s in w.addressable_shards} == {(16, 16)},
        "weight shards")
  check(net[-1].bias.sharding.is_fully_replicated, "bias is replicated")
  mu = jax.tree_util.tree_leaves(optimizer.opt_state)
  check(any(getattr(leaf, "shape", None) == (16, 128) and
            tuple(leaf.sharding.spec) == (None, "data") for leaf in mu),
        "adam moments follow the parameters")

  # The same training on 1 and 8 devices, replicated and sharded: same loss
  # curve and parameters (BatchNorm batch statistics and dropout masks are
  # computed over the global batch, whatever the device count).
  losses1, (net1, opt1) = train(mesh1, pax.sharding.replicate)
  for name, place in (("replicated", pax.sharding.replicate),
                      ("sharded", pax.sharding.shard_params)):
    losses8, (net8, opt8) = train(mesh8, place)
    np.testing.assert_allclose(losses8, losses1, rtol=RTOL,
                               err_msg=f"{name}: loss curves differ")
    for a, b in zip(jax.tree_util.tree_leaves((net1, opt1)),
                    jax.tree_util.tree_leaves((net8, opt8))):
      np.testing.assert_allclose(b, a, rtol=RTOL, atol=ATOL,
                                 err_msg=f"{name}: final params differ")
  check(losses1[-1] < losses1[0], "training reduces the loss")
  print("ALL OK")


if __name__ == "__main__":
  main()
