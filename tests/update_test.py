"""Tests for `pax.build_update_fn`."""

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
  if kind == "linear":
    return pax.Linear(3, 2, rng_key=jax.random.PRNGKey(1)), _linear
  return pax.from_haiku(_mlp)(jnp.zeros((1, 3)),
                              rng_key=jax.random.PRNGKey(1)), _mlp


def _batches(n, batch=8):
  # NumPy data: iterating over a NumPy array is free, while every `xs[i]` of
  # a jax.Array is a dispatched (and first time compiled) op.
  rng = np.random.RandomState(0)
  xs = rng.normal(size=(n, batch, 3)).astype(np.float32)
  ys = rng.normal(size=(n, batch, 2)).astype(np.float32)
  return xs, ys


def _optimizers():
  schedule = optax.warmup_cosine_decay_schedule(0.0, 1e-2, 2, 10)
  return {
      "sgd_momentum": optax.sgd(0.1, momentum=0.9),
      "adam": optax.adam(1e-2),
      "adamw_schedule": optax.adamw(schedule, weight_decay=1e-2),
  }


def mse_loss(model, x, y):
  loss = jnp.mean(jnp.square(model(x) - y))
  return loss, (loss, model)


def haiku_reference(fn, params, tx, xs, ys, jit):
  """The hand-written Haiku + optax training loop; returns params, losses."""
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
  for x, y in zip(xs, ys):
    params, state, value = step(params, state, x, y)
    losses.append(value)
  return params, losses


class BuildUpdateFnTest(parameterized.TestCase):

  @parameterized.product(opt=["sgd_momentum", "adam", "adamw_schedule"],
                         jit=[False, True])
  def test_matches_haiku_optax(self, opt, jit):
    tx = _optimizers()[opt]
    net, fn = _make_net("mlp")
    xs, ys = _batches(N_STEPS)
    ref_params, ref_losses = haiku_reference(fn, net.params, tx, xs, ys, jit)
    update_fn = pax.build_update_fn(mse_loss)
    if jit:
      update_fn = jax.jit(update_fn)
    optimizer = pax.from_optax(tx)(net.parameters())
    for x, y, ref_loss in zip(xs, ys, ref_losses):
      net, optimizer, loss = update_fn(net, optimizer, x, y)
      np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
    chex.assert_trees_all_close(net.params, ref_params, rtol=1e-6, atol=0)

  def test_utils_namespace(self):
    self.assertIs(pax.utils.build_update_fn, pax.build_update_fn)
    self.assertIs(pax.utils.grad, pax.grad)
    self.assertIs(pax.utils.value_and_grad, pax.value_and_grad)
    self.assertIs(pax.utils.scan, pax.scan)

  def test_compiles_once(self):
    net, _ = _make_net("mlp")
    optimizer = pax.from_optax(_optimizers()["adamw_schedule"])(net)
    update_fn = jax.jit(chex.assert_max_traces(pax.build_update_fn(mse_loss),
                                               n=1))
    chex.clear_trace_counter()
    xs, ys = _batches(5)
    for x, y in zip(xs, ys):
      net, optimizer, _ = update_fn(net, optimizer, x, y)

  def test_scan_mode_matches_python_loop(self):
    steps = 50
    net, _ = _make_net("mlp")
    tx = _optimizers()["adam"]
    xs, ys = _batches(steps)

    def batch_loss(model, batch):
      return mse_loss(model, *batch)

    scan_update = pax.build_update_fn(batch_loss, scan_mode=True)
    (scan_net, scan_opt), scan_losses = jax.jit(
        lambda carry, data: jax.lax.scan(scan_update, carry, data))(
            (net, pax.from_optax(tx)(net)), (xs, ys))

    step = jax.jit(pax.build_update_fn(mse_loss))
    loop_net, loop_opt = net, pax.from_optax(tx)(net)
    loop_losses = []
    for x, y in zip(xs, ys):
      loop_net, loop_opt, loss = step(loop_net, loop_opt, x, y)
      loop_losses.append(loss)

    self.assertEqual(scan_losses.shape, (steps,))
    np.testing.assert_allclose(scan_losses, jnp.stack(loop_losses),
                               rtol=1e-5)
    chex.assert_trees_all_close(scan_net.params, loop_net.params, rtol=1e-5,
                                atol=1e-6)
    chex.assert_trees_all_close(scan_opt.opt_state, loop_opt.opt_state,
                                rtol=1e-5, atol=1e-6)
    # And losses really change from step to step.
    self.assertLess(float(scan_losses[-1]), float(scan_losses[0]))

  def test_scan_mode_eager_call(self):
    net, _ = _make_net("linear")
    update_fn = pax.build_update_fn(mse_loss, scan_mode=True)
    x, y = (a[0] for a in _batches(1))
    (net2, opt2), loss = update_fn((net, pax.from_optax(optax.sgd(0.1))(net)),
                                   x, y)
    self.assertEqual(loss.shape, ())
    self.assertIsInstance(net2, pax.Linear)
    self.assertIsInstance(opt2, pax.Optimizer)

  def test_stateful_model_is_updated(self):

    class Counter(pax.Module):
      parameters = pax.parameters_method("w")

      def __init__(self):
        super().__init__()
        self.w = jnp.ones((3, 2))
        self.calls = jnp.zeros((), jnp.int32)

      def __call__(self, x):
        self.calls = self.calls + 1
        return x @ self.w

    net = Counter()
    optimizer = pax.from_optax(optax.sgd(0.1))(net.parameters())
    update_fn = jax.jit(pax.build_update_fn(mse_loss))
    xs, ys = _batches(3)
    for x, y in zip(xs, ys):
      net, optimizer, _ = update_fn(net, optimizer, x, y)
    self.assertEqual(int(net.calls), 3)

  def test_dropout_rng_advances(self):

    def f(x):
      x = hk.Linear(4)(x)
      return hk.dropout(hk.next_rng_key(), 0.5, x)

    net = pax.from_haiku(f)(jnp.zeros((1, 3)), rng_key=jax.random.PRNGKey(0))

    def loss_fn(model, x):
      model, y = pax.purecall(model, x)
      loss = jnp.mean(y ** 2)
      return loss, (loss, model)

    update_fn = jax.jit(pax.build_update_fn(loss_fn))
    optimizer = pax.from_optax(optax.sgd(0.0))(net.parameters())
    x = jnp.ones((8, 3))
    net1, optimizer, loss1 = update_fn(net, optimizer, x)
    net2, optimizer, loss2 = update_fn(net1, optimizer, x)
    self.assertFalse(np.array_equal(net1.rng_key, net.rng_key))
    self.assertFalse(np.array_equal(net2.rng_key, net1.rng_key))
    self.assertNotEqual(float(loss1), float(loss2))


class LearningTest(parameterized.TestCase):

  def test_linear_regression_learns(self):
    w_true = np.array([[1.5], [-2.0], [0.5]], np.float32)
    xs = np.random.RandomState(0).normal(size=(200, 16, 3)).astype(np.float32)
    ys = xs @ w_true + 0.3
    net = pax.Linear(3, 1, rng_key=jax.random.PRNGKey(1))
    optimizer = pax.from_optax(optax.sgd(0.1))(net.parameters())

    def loss_fn(model, batch):
      return mse_loss(model, *batch)

    update_fn = pax.build_update_fn(loss_fn, scan_mode=True)
    (net, _), losses = jax.jit(lambda c, d: jax.lax.scan(update_fn, c, d))(
        (net, optimizer), (xs, ys))
    self.assertLess(float(losses[-10:].mean()), float(losses[0]) / 10)
    np.testing.assert_allclose(net.weight, w_true, atol=1e-2)
    np.testing.assert_allclose(net.bias, [0.3], atol=1e-2)

  def test_classifier_learns(self):
    steps, batch = 200, 32
    rng = np.random.RandomState(0)
    labels = rng.randint(0, 3, size=(steps, batch))
    centers = np.array([[2.0, 0.0], [-1.0, 1.7], [-1.0, -1.7]], np.float32)
    x = (centers[labels] + 0.3 * rng.normal(size=(steps, batch, 2))).astype(
        np.float32)
    net = pax.Sequential(pax.Linear(2, 16, rng_key=jax.random.PRNGKey(1)),
                         jax.nn.relu,
                         pax.Linear(16, 3, rng_key=jax.random.PRNGKey(2)))
    optimizer = pax.from_optax(optax.adam(1e-2))(net.parameters())

    def loss_fn(model, batch):
      x, labels = batch
      logits = model(x)
      loss = optax.softmax_cross_entropy_with_integer_labels(
          logits, labels).mean()
      accuracy = jnp.mean(jnp.argmax(logits, -1) == labels)
      return loss, ((loss, accuracy), model)

    update_fn = pax.build_update_fn(loss_fn, scan_mode=True)
    (net, _), (losses, accuracy) = jax.jit(
        lambda c, d: jax.lax.scan(update_fn, c, d))((net, optimizer),
                                                    (x, labels))
    self.assertLess(float(losses[-10:].mean()), float(losses[:5].mean()) / 10)
    self.assertGreater(float(accuracy[-10:].mean()), 0.95)
    test_logits = net(centers)
    np.testing.assert_array_equal(jnp.argmax(test_logits, -1), [0, 1, 2])


class Stateful(pax.Module):
  parameters = pax.parameters_method("w")

  def __init__(self):
    super().__init__()
    self.w = jnp.ones((3, 2))
    self.calls = jnp.zeros((), jnp.int32)

  def __call__(self, x):
    self.calls = self.calls + 1
    return x @ self.w


class BuildUpdateFnErrorsTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.net = pax.Linear(3, 2)
    self.optimizer = pax.from_optax(optax.sgd(0.1))(self.net.parameters())
    self.x, self.y = jnp.ones((4, 3)), jnp.zeros((4, 2))

  def _run(self, loss_fn):
    return pax.build_update_fn(loss_fn)(self.net, self.optimizer, self.x,
                                        self.y)

  def test_loss_only(self):
    def loss_fn(model, x, y):
      return jnp.mean(jnp.square(model(x) - y))

    with self.assertRaisesRegex(
        ValueError, r"(?s)`.*loss_fn` must return `\(loss, \(aux, model\)\)`, "
        r"but it returned an array of shape \(\).*returning only the loss.*"
        r"Fix.*return loss, \(loss, model\)"):
      self._run(loss_fn)

  def test_loss_and_aux_without_model(self):
    def loss_fn(model, x, y):
      loss = jnp.mean(jnp.square(model(x) - y))
      return loss, loss

    with self.assertRaisesRegex(
        ValueError, r"(?s)its second element is an array of shape \(\) and "
        r"dtype float32, not a pair `\(aux, model\)`.*"
        r"return loss, \(loss, model\)"):
      self._run(loss_fn)

  def test_swapped_model_and_aux(self):
    def loss_fn(model, x, y):
      loss = jnp.mean(jnp.square(model(x) - y))
      return loss, (model, loss)

    with self.assertRaisesRegex(
        ValueError, r"(?s)not a pax module.*`\(model, aux\)` in the wrong "
        r"order.*return loss, \(loss, model\)"):
      self._run(loss_fn)

  def test_model_of_another_structure(self):
    other = pax.Sequential(pax.Linear(3, 2))

    def loss_fn(model, x, y):
      loss = jnp.mean(jnp.square(model(x) - y))
      return loss, (loss, other)

    with self.assertRaisesRegex(
        ValueError, r"(?s)the returned model does not have the structure of "
        r"the input model.*returning another module.*"
        r"return loss, \(loss, model\)"):
      self._run(loss_fn)

  def test_loss_fn_that_changes_the_model(self):
    def loss_fn(model, x, y):
      model.extra = jnp.zeros(())
      loss = jnp.mean(jnp.square(model(x) - y))
      return loss, (loss, model)

    with self.assertRaisesRegex(ValueError,
                                r"(?s)does not have the structure.*extra"):
      self._run(loss_fn)

  def test_errors_are_the_same_under_jit(self):
    def loss_fn(model, x, y):
      return jnp.mean(jnp.square(model(x) - y))

    update_fn = jax.jit(pax.build_update_fn(loss_fn))
    with self.assertRaisesRegex(ValueError,
                                r"must return `\(loss, \(aux, model\)\)`"):
      update_fn(self.net, self.optimizer, self.x, self.y)

  def test_loss_not_scalar(self):
    def loss_fn(model, x, y):
      loss = jnp.square(model(x) - y)
      return loss, (loss, model)

    with self.assertRaisesRegex(
        TypeError, r"(?s)must be a scalar \(shape \(\)\), got shape \(4, 2\)"
        r".*not reduced.*jnp\.mean"):
      self._run(loss_fn)

  def test_loss_not_float(self):
    def loss_fn(model, x, y):
      loss = jnp.sum(model(x) > y).astype(jnp.int32)
      return loss, (loss, model)

    with self.assertRaisesRegex(TypeError,
                                r"(?s)floating point dtype, got int32"):
      self._run(loss_fn)

  def test_model_not_a_module(self):
    update_fn = pax.build_update_fn(mse_loss)
    with self.assertRaisesRegex(
        TypeError, r"(?s)model argument must be a pax\.Module.*got dict.*"
        r"update_fn\(model, optimizer, x, y\)"):
      update_fn(self.net.params, self.optimizer, self.x, self.y)

  def test_optimizer_not_an_optimizer(self):
    update_fn = pax.build_update_fn(mse_loss)
    with self.assertRaisesRegex(
        TypeError, r"(?s)optimizer must be a pax Optimizer, got "
        r"GradientTransformation.*pax\.from_optax\(optax\.adam\(1e-3\)\)"):
      update_fn(self.net, optax.adam(1e-3), self.x, self.y)

  def test_scan_mode_needs_a_pair(self):
    update_fn = pax.build_update_fn(mse_loss, scan_mode=True)
    with self.assertRaisesRegex(
        TypeError, r"(?s)first argument must be the pair "
        r"`\(model, optimizer\)`.*jax\.lax\.scan\(update_fn"):
      update_fn(self.net, self.optimizer, self.x, self.y)

  def test_not_callable(self):
    with self.assertRaisesRegex(TypeError, "expects a loss function"):
      pax.build_update_fn("loss")

  def test_gradients_of_stateful_model_without_pure_semantics(self):
    # loss_fn runs with pax.pure semantics, so stateful calls just work.
    net = Stateful()
    optimizer = pax.from_optax(optax.sgd(0.1))(net.parameters())
    net, optimizer, _ = pax.build_update_fn(mse_loss)(net, optimizer, self.x,
                                                      self.y)
    self.assertEqual(int(net.calls), 1)


if __name__ == "__main__":
  quick_exit.main()
