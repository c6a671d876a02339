"""Tests for `pax.from_optax` / `pax.Optimizer`."""

from absl.testing import parameterized
import chex
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import optax

import pax_haiku as pax
import quick_exit  # tests/quick_exit.py, beside this file

N_STEPS = 4


def _mlp(x):
  return hk.nets.MLP([8, 2])(x)


def _linear(x):
  return hk.Linear(2)(x)


def _make_net(kind):
  x = jnp.zeros((1, 3))
  if kind == "linear":
    return pax.Linear(3, 2, rng_key=jax.random.PRNGKey(1)), _linear
  return pax.from_haiku(_mlp)(x, rng_key=jax.random.PRNGKey(1)), _mlp


def _batches(n=N_STEPS):
  rng = np.random.RandomState(0)
  return [(rng.normal(size=(8, 3)).astype(np.float32),
           rng.normal(size=(8, 2)).astype(np.float32)) for _ in range(n)]


def _optimizers():
  schedule = optax.exponential_decay(1e-2, transition_steps=2, decay_rate=0.5)
  return {
      "sgd_momentum": optax.sgd(0.1, momentum=0.9),
      "adam": optax.adam(1e-2),
      "adamw_schedule": optax.adamw(schedule, weight_decay=1e-2),
  }


def _mse(model, x, y):
  return jnp.mean(jnp.square(model(x) - y))


def haiku_reference(fn, params, tx, batches, jit):
  """The hand-written Haiku + optax training loop."""
  apply = hk.transform(fn).apply

  def loss(p, x, y):
    return jnp.mean(jnp.square(apply(p, None, x) - y))

  def step(p, s, x, y):
    value, g = jax.value_and_grad(loss)(p, x, y)
    updates, s = tx.update(g, s, p)
    return optax.apply_updates(p, updates), s, value

  if jit:
    step = jax.jit(step)
  state = tx.init(params)
  losses = []
  for x, y in batches:
    params, state, value = step(params, state, x, y)
    losses.append(value)
  return params, losses


class OptimizerMatchesOptaxTest(parameterized.TestCase):

  @parameterized.product(opt=["sgd_momentum", "adam", "adamw_schedule"],
                         jit=[False, True], kind=["linear", "mlp"])
  def test_step_matches_haiku_optax(self, opt, jit, kind):
    tx = _optimizers()[opt]
    net, fn = _make_net(kind)
    ref_params, ref_losses = haiku_reference(fn, net.params, tx, _batches(),
                                             jit)

    def step(model, optimizer, x, y):
      loss, grads = pax.value_and_grad(_mse)(model, x, y)
      model, optimizer = optimizer.step(model, grads)
      return model, optimizer, loss

    if jit:
      step = jax.jit(step)
    optimizer = pax.from_optax(tx)(net.parameters())
    for (x, y), ref_loss in zip(_batches(), ref_losses):
      net, optimizer, loss = step(net, optimizer, x, y)
      np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
    chex.assert_trees_all_close(net.params, ref_params, rtol=1e-6, atol=0)

  @parameterized.parameters(False, True)
  def test_pax_style_call_inside_pure(self, jit):
    tx = _optimizers()["adam"]
    net, fn = _make_net("mlp")
    ref_params, _ = haiku_reference(fn, net.params, tx, _batches(), jit)

    @pax.pure
    def step(model, optimizer, x, y):
      grads = pax.grad(_mse)(model, x, y)
      params = optimizer(grads, model.parameters())
      return model.update_parameters(params), optimizer

    if jit:
      step = jax.jit(step)
    optimizer = pax.from_optax(tx)(net.parameters())
    for x, y in _batches():
      net, optimizer = step(net, optimizer, x, y)
    chex.assert_trees_all_close(net.params, ref_params, rtol=1e-6, atol=0)

  @parameterized.named_parameters(
      ("chain", lambda: optax.chain(optax.clip_by_global_norm(0.5),
                                    optax.sgd(0.1, momentum=0.9))),
      ("masked", lambda: optax.masked(
          optax.adam(1e-2),
          lambda p: jax.tree_util.tree_map(lambda a: a.ndim > 1, p))),
      ("multi_transform", lambda: optax.multi_transform(
          {"w": optax.adam(1e-2), "b": optax.sgd(0.1)},
          lambda p: jax.tree_util.tree_map(
              lambda a: "w" if a.ndim > 1 else "b", p))),
      ("inject_hyperparams", lambda: optax.inject_hyperparams(optax.adamw)(
          learning_rate=optax.linear_schedule(1e-2, 1e-3, 3),
          weight_decay=1e-3)),
  )
  def test_any_gradient_transformation(self, make_tx):
    tx = make_tx()
    net, fn = _make_net("mlp")
    ref_params, _ = haiku_reference(fn, net.params, tx, _batches(), True)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(model, optimizer, x, y):
      grads = pax.grad(_mse)(model, x, y)
      return optimizer.step(model, grads)

    chex.clear_trace_counter()
    optimizer = pax.from_optax(tx)(net.parameters())
    for x, y in _batches():
      net, optimizer = step(net, optimizer, x, y)
    chex.assert_trees_all_close(net.params, ref_params, rtol=1e-6, atol=0)

  def test_plain_pytree_params(self):
    tx = _optimizers()["adam"]
    net, fn = _make_net("mlp")
    ref_params, _ = haiku_reference(fn, net.params, tx, _batches(), False)
    apply = hk.transform(fn).apply
    params = net.params
    optimizer = pax.from_optax(tx)(params)
    for x, y in _batches():
      grads = jax.grad(
          lambda p, x, y: jnp.mean(jnp.square(apply(p, None, x) - y)))(
              params, x, y)
      params, optimizer = optimizer.step(params, grads)
    chex.assert_trees_all_close(params, ref_params, rtol=1e-6, atol=0)


class OptimizerModuleTest(parameterized.TestCase):

  def test_state_is_not_trainable(self):
    net = pax.Linear(3, 2)
    optimizer = pax.from_optax(optax.adam(1e-3))(net.parameters())
    self.assertEqual(jax.tree_util.tree_leaves(optimizer.parameters()), [])
    self.assertNotEmpty(jax.tree_util.tree_leaves(optimizer))
    self.assertIs(optimizer.tx, optimizer.copy().tx)
    self.assertEqual(optimizer, optimizer.copy())

  def test_copies_share_the_transformation(self):
    optimizer = pax.from_optax(optax.adam(1e-3))(pax.Linear(2, 2))
    twin = jax.tree_util.tree_map(jnp.copy, optimizer)
    self.assertIs(twin.tx, optimizer.tx)
    self.assertEqual(jax.tree_util.tree_structure(twin),
                     jax.tree_util.tree_structure(optimizer))

  def test_module_is_reduced_to_parameters(self):
    net = pax.Linear(3, 2)
    a = pax.from_optax(optax.adam(1e-3))(net)
    b = pax.from_optax(optax.adam(1e-3))(net.parameters())
    chex.assert_trees_all_equal(a.opt_state, b.opt_state)

  def test_step_returns_new_objects(self):
    net = pax.Linear(3, 2)
    optimizer = pax.from_optax(optax.sgd(0.1))(net.parameters())
    x, y = _batches(1)[0]
    grads = pax.grad(_mse)(net, x, y)
    weight = net.weight
    new_net, new_optimizer = optimizer.step(net, grads)
    self.assertIs(net.weight, weight)
    self.assertIsNot(new_net, net)
    self.assertIsNot(new_optimizer, optimizer)
    np.testing.assert_allclose(new_net.weight, weight - 0.1 * grads.weight,
                               rtol=1e-6)

  def test_optimizer_crosses_jit_with_stable_structure(self):
    net = pax.Linear(3, 2)
    optimizer = pax.from_optax(optax.adam(1e-3))(net.parameters())
    x, y = _batches(1)[0]
    grads = pax.grad(_mse)(net, x, y)
    _, new_optimizer = jax.jit(lambda o, n, g: o.step(n, g))(optimizer, net,
                                                             grads)
    self.assertEqual(jax.tree_util.tree_structure(new_optimizer),
                     jax.tree_util.tree_structure(optimizer))

  def test_hyperparams_read_and_set(self):
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.1)
    net = pax.Linear(3, 2)
    optimizer = pax.from_optax(tx)(net.parameters())
    self.assertAlmostEqual(float(optimizer.hyperparams["learning_rate"]), 0.1,
                           places=6)
    # The returned dict is a copy: changing it does not change the optimizer.
    optimizer.hyperparams["learning_rate"] = 5.0
    self.assertAlmostEqual(float(optimizer.hyperparams["learning_rate"]), 0.1,
                           places=6)
    frozen = optimizer.set_hyperparam("learning_rate", 0.0)
    self.assertEqual(float(frozen.hyperparams["learning_rate"]), 0.0)
    self.assertAlmostEqual(float(optimizer.hyperparams["learning_rate"]), 0.1,
                           places=6)
    x, y = _batches(1)[0]
    grads = pax.grad(_mse)(net, x, y)
    same_net, _ = frozen.step(net, grads)
    chex.assert_trees_all_equal(same_net.params, net.params)
    moved_net, _ = optimizer.step(net, grads)
    self.assertFalse(np.allclose(moved_net.weight, net.weight))

  def test_set_hyperparam_does_not_recompile(self):
    tx = optax.inject_hyperparams(optax.adam)(learning_rate=1e-3)
    net = pax.Linear(3, 2)
    optimizer = pax.from_optax(tx)(net.parameters())

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(model, optimizer, x, y):
      return optimizer.step(model, pax.grad(_mse)(model, x, y))

    chex.clear_trace_counter()
    for i, (x, y) in enumerate(_batches()):
      optimizer = optimizer.set_hyperparam("learning_rate", 1e-3 / (i + 1))
      net, optimizer = step(net, optimizer, x, y)
    self.assertAlmostEqual(float(optimizer.hyperparams["learning_rate"]),
                           1e-3 / N_STEPS, places=7)

  def test_nested_inject_hyperparams(self):
    tx = optax.chain(optax.clip(1.0),
                     optax.inject_hyperparams(optax.sgd)(learning_rate=0.1))
    optimizer = pax.from_optax(tx)(pax.Linear(2, 2).parameters())
    optimizer = optimizer.set_hyperparam("learning_rate", 0.2)
    self.assertAlmostEqual(float(optimizer.hyperparams["learning_rate"]), 0.2,
                           places=6)


class Stateful(pax.Module):
  """`w` is trainable; `count` is non-trainable state."""

  parameters = pax.parameters_method("w")

  def __init__(self):
    super().__init__()
    self.w = jnp.ones((2,))
    self.count = jnp.zeros((), jnp.float32)

  def __call__(self, x):
    self.count = self.count + 1
    return x * self.w


class OptimizerErrorsTest(parameterized.TestCase):

  def test_uncalled_optax_function(self):
    with self.assertRaisesRegex(
        TypeError, r"(?s)function `adam` itself.*optax\.adam\(1e-3\)"):
      pax.from_optax(optax.adam)

  def test_not_a_transformation(self):
    with self.assertRaisesRegex(TypeError, "(?s)GradientTransformation.*Fix"):
      pax.from_optax(0.1)

  def test_grads_of_whole_module(self):
    model = Stateful()
    optimizer = pax.from_optax(optax.sgd(0.1))(model.parameters())

    def loss(m):
      m, y = pax.purecall(m, jnp.ones((2,)))
      return jnp.sum(y)

    grads = jax.grad(loss)(model)  # Includes `count`: not the params' shape.
    with self.assertRaisesRegex(
        ValueError, r"(?s)gradients do not have the structure of the "
        r"parameters.*count.*jax\.grad.*pax\.value_and_grad"):
      optimizer.step(model, grads)

  def test_optimizer_for_another_model(self):
    optimizer = pax.from_optax(optax.sgd(0.1))(pax.Linear(3, 2).parameters())
    net = pax.Sequential(pax.Linear(3, 2))
    grads = pax.grad(lambda m, x: jnp.sum(m(x)))(net, jnp.ones((1, 3)))
    with self.assertRaisesRegex(
        ValueError, r"(?s)structure this optimizer was created for.*"
        r"pax\.from_optax\(tx\)\(model\.parameters\(\)\)"):
      optimizer.step(net, grads)

  def test_call_outside_pure(self):
    net = pax.Linear(3, 2)
    optimizer = pax.from_optax(optax.sgd(0.1))(net.parameters())
    grads = pax.grad(lambda m, x: jnp.sum(m(x)))(net, jnp.ones((1, 3)))
    with self.assertRaisesRegex(
        ValueError, r"(?s)only inside `pax\.pure`.*optimizer\.step"):
      optimizer(grads, net.parameters())

  def test_hyperparams_need_inject_hyperparams(self):
    optimizer = pax.from_optax(optax.adam(1e-3))(pax.Linear(2, 2))
    with self.assertRaisesRegex(ValueError, r"optax\.inject_hyperparams"):
      _ = optimizer.hyperparams

  def test_unknown_hyperparam(self):
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.1)
    optimizer = pax.from_optax(tx)(pax.Linear(2, 2))
    with self.assertRaisesRegex(ValueError, r"'lr'.*\['learning_rate'"):
      optimizer.set_hyperparam("lr", 0.1)


if __name__ == "__main__":
  quick_exit.main()
