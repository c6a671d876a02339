"""`pax.jit_update`: donating update steps (model and optimizer consumed).

Every donated result is compared with the same step without donation
(`jax.jit(pax.build_update_fn(...))`) and, for an MLP, with a hand-written
raw Haiku + optax step donating its params and optimizer state.
"""

import functools
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
from unittest import mock
import warnings

from absl.testing import absltest
from absl.testing import parameterized
import chex
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import optax

import pax_haiku as pax
from configs import smoke
from tools.trainer import checkpoint
from tools.trainer import metrics as metrics_lib
from tools.trainer import models
from tools.trainer import train_lib
import quick_exit  # tests/quick_exit.py, beside this file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N_STEPS = 3


def _mse(model, x, y):
  loss = jnp.mean(jnp.square(model(x) - y))
  return loss, (loss, model)


def _batch_loss(model, batch):
  return _mse(model, *batch)


# One update function and one optax transformation for every test: the
# optimizer holds the transformation as a static field, so tests stepping the
# same model with the same (donating or plain) step share its compilation.
_MSE_UPDATE = pax.build_update_fn(_mse)
_TX = optax.adam(1e-2)


def _mlp(width=16, depth=2, dim=4):
  layers = []
  for i in range(depth):
    layers += [pax.Linear(dim if i == 0 else width, width), jax.nn.relu]
  return pax.Sequential(*layers, pax.Linear(width, 2))


class _BNNet(pax.Module):
  """Linear -> BatchNorm -> Dropout -> Linear: parameters, state, RNG."""

  def __init__(self):
    super().__init__()
    self.l1 = pax.Linear(4, 8)
    self.bn = pax.BatchNorm1D(8)
    self.drop = pax.Dropout(0.25)
    self.l2 = pax.Linear(8, 2)

  def __call__(self, x):
    h = self.bn(self.l1(x)[:, None, :])[:, 0, :]  # BatchNorm1D: (N, W, C)
    return self.l2(self.drop(jax.nn.relu(h)))


def _make(kind):
  pax.seed_rng_key(3)
  net = _BNNet() if kind == "stateful" else _mlp()
  return net, pax.from_optax(_TX)(net.parameters())


def _data(n=N_STEPS, batch=8):
  rng = np.random.RandomState(0)
  return (rng.normal(size=(n, batch, 4)).astype(np.float32),
          rng.normal(size=(n, batch, 2)).astype(np.float32))


def _copy(tree):
  return jax.tree_util.tree_map(jnp.copy, tree)


def _alive(tree):
  return [not x.is_deleted() for x in jax.tree_util.tree_leaves(tree)
          if isinstance(x, jax.Array)]


def _live_bytes():
  gc.collect()
  return sum(x.nbytes for x in jax.live_arrays())


def _nbytes(tree):
  return sum(x.nbytes for x in jax.tree_util.tree_leaves(tree))


class JitUpdateTest(parameterized.TestCase):

  @parameterized.parameters("mlp", "stateful")
  def test_same_results_as_plain_jit_and_inputs_consumed(self, kind):
    net, opt = _make(kind)
    plain = jax.jit(_MSE_UPDATE)
    donating = pax.jit_update(_MSE_UPDATE)
    self.assertEqual(donating.donate_argnums, (0, 1))
    pn, po = net, opt
    dn, do = _copy((net, opt))
    xs, ys = _data()
    with warnings.catch_warnings():
      # Every donated buffer must find an output of its shape and dtype.
      warnings.simplefilter("error")
      for x, y in zip(xs, ys):
        pn, po, pl = plain(pn, po, x, y)
        old = (dn, do)
        dn, do, dl = donating(dn, do, x, y)
        # Parameters and optimizer state are consumed. (A state array the
        # step only overwrites, never reads, such as BatchNorm's debiased
        # averages, is not passed to XLA at all: JAX leaves it alive.)
        self.assertFalse(any(_alive((old[0].parameters(), old[1]))))
        self.assertTrue(all(_alive((dn, do))))
        np.testing.assert_array_equal(pl, dl)
    chex.assert_trees_all_equal((pn, po), (dn, do))
    self.assertTrue(all(_alive((net, opt))))  # The plain step kept these.
    if kind == "stateful":  # The BatchNorm statistics and the RNG moved.
      for new, old in zip(jax.tree_util.tree_leaves(dn.state),
                          jax.tree_util.tree_leaves(net.state)):
        self.assertFalse(np.array_equal(new, old))

  def test_matches_raw_haiku_optax_donated_step(self):
    net, opt = _make("mlp")
    f = pax.to_haiku(net)
    tx = _TX
    params, state = _copy((net.params, net.state))
    opt_state = tx.init(params)

    @functools.partial(jax.jit, donate_argnums=(0, 1, 2))
    def raw_step(params, state, opt_state, x, y):
      def loss_fn(p):
        out, s = f.apply(p, state, None, x)
        return jnp.mean(jnp.square(out - y)), s
      (loss, state), grads = jax.value_and_grad(loss_fn, has_aux=True)(
          params)
      updates, opt_state = tx.update(grads, opt_state, params)
      return optax.apply_updates(params, updates), state, opt_state, loss

    step = pax.jit_update(_MSE_UPDATE)
    for x, y in zip(*_data()):
      params, state, opt_state, raw_loss = raw_step(params, state, opt_state,
                                                    x, y)
      net, opt, loss = step(net, opt, x, y)
      np.testing.assert_allclose(loss, raw_loss, rtol=1e-6)
    chex.assert_trees_all_close(net.params, params, rtol=1e-6, atol=1e-7)

  def test_stale_module_is_a_clear_error_and_the_fix_works(self):
    net, opt = _make("mlp")
    step = pax.jit_update(_MSE_UPDATE)
    x, y = (a[0] for a in _data(1))
    new_net, new_opt, _ = step(net, opt, x, y)
    with self.assertRaisesRegex(
        ValueError, r"(?s)pax.jit_update: argument 0 \(a module \(Sequential\)\) "
        r"holds 6 deleted arrays \(float32\[.*this module was passed to a "
        r"donating update step.*use the module it returned"):
      step(net, new_opt, x, y)
    with self.assertRaisesRegex(ValueError, r"(?s)argument 1 .*Optimizer.* holds"):
      step(new_net, opt, x, y)
    # Calling the stale module eagerly: the same explanation.
    with self.assertRaisesRegex(
        ValueError, r"(?s)Linear holds 2 deleted arrays .*donating update step"):
      net(x)
    # The fixes the message suggests: use the returned module...
    net, opt, loss = step(new_net, new_opt, x, y)
    self.assertEqual(loss.shape, ())
    # ...copy its arrays to keep a model from before a step...
    saved = jax.tree_util.tree_map(jnp.copy, net)
    net, opt, _ = step(net, opt, x, y)
    self.assertEqual(saved(x).shape, (8, 2))
    # ...or a step that does not donate.
    keep = pax.jit_update(_MSE_UPDATE, donate=False)
    self.assertEqual(keep.donate_argnums, ())
    new_net, new_opt, _ = keep(net, opt, x, y)
    self.assertTrue(all(_alive((net, opt))))
    self.assertEqual(net(x).shape, (8, 2))

  def test_other_errors_pass_through(self):
    def bad_loss(model, x):
      return jnp.mean(model(x))  # Only the loss: build_update_fn's error.
    net, opt = _make("mlp")
    step = pax.jit_update(pax.build_update_fn(bad_loss))
    with self.assertRaisesRegex(ValueError, r"(?s)must return `\(loss, \(aux, "):
      step(net, opt, jnp.ones((2, 4)))
    self.assertTrue(all(_alive((net, opt))))

  def test_scan_mode_donates_the_pair(self):
    net, opt = _make("stateful")
    scan_update = pax.build_update_fn(_batch_loss, scan_mode=True)
    step = pax.jit_update(scan_update)
    self.assertEqual(step.donate_argnums, (0,))
    xs, ys = _data()
    plain_carry = (net, opt)
    carry = _copy((net, opt))
    for batch in zip(xs, ys):
      plain_carry, pl = jax.jit(scan_update)(plain_carry, batch)
      old, (carry, dl) = carry, step(carry, batch)
      self.assertFalse(any(_alive((old[0].parameters(), old[1]))))
      np.testing.assert_array_equal(pl, dl)
    chex.assert_trees_all_equal(plain_carry, carry)

  def test_scan_of_steps_inside_one_donating_call(self):
    net, opt = _make("stateful")
    scan_update = pax.build_update_fn(_batch_loss, scan_mode=True)

    def many(carry, xs, ys):
      return jax.lax.scan(scan_update, carry, (xs, ys))

    xs, ys = _data(5)
    plain, plain_losses = jax.jit(many)((net, opt), xs, ys)
    step = pax.jit_update(many, donate_argnums=0)
    carry = _copy((net, opt))
    out, losses = step(carry, xs, ys)
    self.assertFalse(any(_alive(carry)))
    chex.assert_trees_all_equal((plain, plain_losses), (out, losses))

  def test_untagged_function_that_would_donate_a_batch(self):
    net, opt = _make("mlp")

    def many(carry, xs, ys):
      return jax.lax.scan(pax.build_update_fn(_batch_loss, scan_mode=True),
                          carry, (xs, ys))

    xs, ys = (jnp.asarray(a) for a in _data())
    with self.assertRaisesRegex(
        TypeError, r"(?s)donates arguments \(0, 1\).*argument 1 is an array.*"
        r"Fix: .*`pax.jit_update\(update_fn, donate_argnums=\(0,\)\)`"):
      pax.jit_update(many)((net, opt), xs, ys)
    self.assertTrue(all(_alive((net, opt, xs))))
    (net, opt), _ = pax.jit_update(many, donate_argnums=(0,))((net, opt),
                                                              xs, ys)
    self.assertTrue(all(_alive(xs)))

  def test_not_a_function(self):
    with self.assertRaisesRegex(
        TypeError, r"(?s)expects an update function, got int.*Fix: `update_fn "
        r"= pax.jit_update\(pax.build_update_fn\(loss_fn\)\)`"):
      pax.jit_update(3)

  @parameterized.parameters({"bad": ()}, {"bad": (-1,)}, {"bad": "model"})
  def test_bad_donate_argnums(self, bad):
    with self.assertRaisesRegex(
        TypeError, r"(?s)donate_argnums must be non-negative argument positions"
        r".*Fix: e.g. `donate_argnums=\(0, 1\)`"):
      pax.jit_update(_MSE_UPDATE, donate_argnums=bad)
    # The fix.
    self.assertEqual(pax.jit_update(pax.build_update_fn(_mse),
                                    donate_argnums=(0, 1)).donate_argnums,
                     (0, 1))

  def test_donated_arguments_must_be_passed_by_position(self):
    net, opt = _make("mlp")
    step = pax.jit_update(_MSE_UPDATE)
    x, y = (a[0] for a in _data(1))
    with self.assertRaisesRegex(
        TypeError, r"(?s)got 0 positional argument.*Fix: .*`update_fn\(model, "
        r"optimizer, x, y\)`"):
      step(model=net, optimizer=opt, x=x, y=y)
    net, opt, _ = step(net, opt, x, y)  # The fix.

  def test_optimizer_sharing_the_model_arrays(self):
    # An optax transformation whose state *is* the parameters (no copy).
    keep_params = optax.GradientTransformation(
        lambda params: params, lambda g, s, p=None: (g, s))
    net = _mlp()
    opt = pax.from_optax(keep_params)(net.parameters())
    step = pax.jit_update(_MSE_UPDATE)
    x, y = (a[0] for a in _data(1))
    with self.assertRaisesRegex(
        ValueError, r"(?s)is both argument 0 at .* and argument 1 at .*Fix: .*"
        r"optimizer = jax.tree_util.tree_map\(jnp.copy, optimizer\)"):
      step(net, opt, x, y)
    self.assertTrue(all(_alive((net, opt))))
    optimizer = jax.tree_util.tree_map(jnp.copy, opt)  # The fix.
    net, optimizer, _ = step(net, optimizer, x, y)
    self.assertTrue(all(_alive((net, optimizer))))

  def test_jax_grad_of_a_module_holding_state(self):
    # A hand-written step: jax.value_and_grad w.r.t. the parameters of a
    # module with BatchNorm state and a dropout RNG, the module as aux.
    def update(model, optimizer, x, y):
      def loss_fn(params, model):
        model = model.update_parameters(params)
        model, out = pax.purecall(model, x)
        return jnp.mean(jnp.square(out - y)), model
      (loss, model), grads = jax.value_and_grad(loss_fn, has_aux=True)(
          model.parameters(), model)
      model, optimizer = optimizer.step(model, grads)
      return model, optimizer, loss

    net, opt = _make("stateful")
    plain = jax.jit(update)
    step = pax.jit_update(update)
    self.assertEqual(step.donate_argnums, (0, 1))
    pn, po = net, opt
    dn, do = _copy((net, opt))
    for x, y in zip(*_data()):
      pn, po, pl = plain(pn, po, x, y)
      dn, do, dl = step(dn, do, x, y)
      np.testing.assert_array_equal(pl, dl)
    chex.assert_trees_all_equal((pn, po), (dn, do))
    self.assertFalse(all(np.array_equal(a, b) for a, b in zip(
        jax.tree_util.tree_leaves(dn.state),
        jax.tree_util.tree_leaves(net.state))))

  @parameterized.parameters(True, False)
  def test_params_and_optimizer_state_exist_once(self, donate):
    # jax.live_arrays() while the caller still holds the step's inputs, as
    # in `net, opt, loss = step(net, opt, x, y)` right before rebinding:
    # with donation the given arrays are gone (one copy), without it both
    # the old and the new model and optimizer are alive (two copies).
    net = _mlp(width=256, depth=3)
    opt = pax.from_optax(optax.adam(1e-3))(net.parameters())
    x, y = jnp.ones((8, 4)), jnp.zeros((8, 2))
    step = pax.jit_update(_MSE_UPDATE, donate=donate)
    net, opt, _ = step(net, opt, x, y)  # Compiled outside the count.
    size = _nbytes((net, opt))
    before = _live_bytes()
    new_net, new_opt, loss = step(net, opt, x, y)
    grown = _live_bytes() - before
    self.assertTrue(all(_alive((new_net, new_opt))))
    if donate:
      self.assertEqual(grown, loss.nbytes)
      self.assertFalse(any(_alive((net, opt))))
    else:
      self.assertEqual(grown, size + loss.nbytes)


_SHARDED_SCRIPT = r"""
import json, sys
import jax, jax.numpy as jnp, numpy as np, optax
import pax_haiku as pax

def loss_fn(model, x, y):
  loss = jnp.mean(jnp.square(model(x) - y))
  return loss, (loss, model)

mesh = pax.sharding.make_mesh()
pax.seed_rng_key(0)
net = pax.Sequential(pax.Linear(16, 64), jax.nn.relu, pax.Linear(64, 8))
opt = pax.from_optax(optax.adam(1e-2))(net.parameters())
host = pax.sharding.to_host((net, opt))
tree = pax.sharding.shard_params((net, opt), mesh, min_size=64)
rng = np.random.RandomState(0)
x = rng.normal(size=(32, 16)).astype(np.float32)
y = rng.normal(size=(32, 8)).astype(np.float32)
xs, ys = pax.sharding.shard_batch((x, y), mesh)
shardings = pax.sharding.shardings_of(tree)
step = pax.jit_update(
    pax.build_update_fn(loss_fn),
    out_shardings=(*shardings, pax.sharding.replicated_sharding(mesh)))
before = [str(s) for s in jax.tree_util.tree_leaves(shardings)]
net, opt = tree
for _ in range(3):
  old = (net, opt)
  net, opt, loss = step(net, opt, xs, ys)
after = [str(s.sharding) for s in jax.tree_util.tree_leaves((net, opt))]
ref_net, ref_opt = jax.tree_util.tree_map(jnp.asarray, host)
ref_step = jax.jit(pax.build_update_fn(loss_fn))
for _ in range(3):
  ref_net, ref_opt, ref_loss = ref_step(ref_net, ref_opt, x, y)
diff = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
           for a, b in zip(jax.tree_util.tree_leaves(pax.sharding.to_host(net)),
                           jax.tree_util.tree_leaves(ref_net)))
print(json.dumps({
    "devices": jax.device_count(),
    "same_shardings": before == after,
    "split_leaves": sum(len(l.sharding.device_set) > 1 and
                        not l.sharding.is_fully_replicated
                        for l in jax.tree_util.tree_leaves((net, opt))),
    "inputs_deleted": all(l.is_deleted()
                          for l in jax.tree_util.tree_leaves(old)),
    "max_diff": diff,
    "loss_diff": abs(float(loss) - float(ref_loss)),
}))
"""


class ShardedDonationTest(absltest.TestCase):

  def test_donated_arrays_keep_their_shardings_on_8_devices(self):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                        " --xla_force_host_platform_device_count=8").strip()
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (ROOT, env.get("PYTHONPATH")) if p)
    proc = subprocess.run([sys.executable, "-c", _SHARDED_SCRIPT], env=env,
                          cwd=ROOT, capture_output=True, text=True,
                          timeout=240, check=False)
    self.assertEqual(proc.returncode, 0, msg=proc.stderr[-3000:])
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    self.assertEqual(out["devices"], 8)
    self.assertTrue(out["same_shardings"])
    self.assertGreater(out["split_leaves"], 0)
    self.assertTrue(out["inputs_deleted"])
    # The same steps on one device, without donation (float summation order
    # over the split batch differs).
    self.assertLess(out["max_diff"], 1e-5)
    self.assertLess(out["loss_diff"], 1e-5)


class TrainerDonationTest(absltest.TestCase):
  """The binary's chunk donates; curves and parameters are unchanged.

  The final model and optimizer are read from what the last chunk call
  returned (host copies taken before the next call consumes them), so the
  comparison does not depend on the checkpoint format.
  """

  def _train(self, workdir, donate, num_steps=40):
    config = smoke.get_config()
    config.num_steps = num_steps
    config.checkpoint_every = 20
    config.eval_every = 20
    finals = []
    make = train_lib.make_train_chunk

    def make_recording(*args, **kwargs):
      chunk = make(*args, donate=donate, **kwargs)

      def recording(model, optimizer, batches):
        out = chunk(model, optimizer, batches)
        finals.append([np.asarray(x) for x in
                       jax.tree_util.tree_leaves(out[:2])])
        return out

      return recording

    with mock.patch.object(train_lib, "make_train_chunk", make_recording):
      result = train_lib.train_and_evaluate(config, workdir)
    curve = [(r["step"], r.get("train/loss"), r.get("test/loss"))
             for r in metrics_lib.read_metrics(
                 os.path.join(workdir, "metrics.jsonl"))]
    result["chunk_calls"] = len(finals)
    return finals[-1], curve, result

  def test_donated_run_and_resume_are_bit_identical(self):
    root = tempfile.mkdtemp()
    plain, plain_curve, plain_result = self._train(
        os.path.join(root, "plain"), False)
    # The donated run, then, as if interrupted after its step-20
    # checkpoint: drop the later one and resume in the same directory.
    resumed_dir = os.path.join(root, "resumed")
    donated, donated_curve, _ = self._train(resumed_dir, True)
    shutil.rmtree(checkpoint.checkpoint_path(
        os.path.join(resumed_dir, "checkpoints"), 40))
    resumed, resumed_curve, resumed_result = self._train(resumed_dir, True)
    self.assertEqual(plain_result["step"], 40)
    self.assertEqual(resumed_result["step"], 40)
    # The resumed run trained steps 21..40 only (10 steps per call).
    self.assertEqual((plain_result["chunk_calls"],
                      resumed_result["chunk_calls"]), (4, 2))
    self.assertEqual(resumed_result["loss"], plain_result["loss"])
    for other, curve in ((donated, donated_curve), (resumed, resumed_curve)):
      chex.assert_trees_all_equal(plain, other)
      self.assertEqual(plain_curve, curve)
    # Train loss every 10 steps and test loss every 20 were both recorded.
    self.assertLen({s for s, train, _ in plain_curve if train is not None}, 4)
    self.assertLen({s for s, _, test in plain_curve if test is not None}, 2)


if __name__ == "__main__":
  quick_exit.main()
