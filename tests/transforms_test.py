"""Tests for `pax.grad`, `pax.value_and_grad` and `pax.scan`."""

from absl.testing import parameterized
import chex
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

import pax_haiku as pax
import quick_exit  # tests/quick_exit.py, beside this file


def _mlp(x):
  return hk.nets.MLP([8, 2])(x)


def _data():
  rng = np.random.RandomState(0)
  return (rng.normal(size=(8, 3)).astype(np.float32),
          rng.normal(size=(8, 2)).astype(np.float32))


def _mse(model, x, y):
  return jnp.mean(jnp.square(model(x) - y))


class Stateful(pax.Module):
  """`w` is trainable; `count` is non-trainable state."""

  parameters = pax.parameters_method("w")

  def __init__(self):
    super().__init__()
    self.w = jnp.array([1.0, 2.0])
    self.count = jnp.zeros((), jnp.float32)

  def __call__(self, x):
    self.count = self.count + 1
    return x * self.w


class GradTest(parameterized.TestCase):

  @parameterized.parameters(False, True)
  def test_matches_jax_grad_over_haiku_params(self, jit):
    net = pax.from_haiku(_mlp)(jnp.zeros((1, 3)),
                               rng_key=jax.random.PRNGKey(1))
    apply = hk.transform(_mlp).apply
    x, y = _data()

    def hk_loss(params, x, y):
      return jnp.mean(jnp.square(apply(params, None, x) - y))

    ref_loss, ref_grads = jax.value_and_grad(hk_loss)(net.params, x, y)
    value_and_grad = pax.value_and_grad(_mse)
    grad = pax.grad(_mse)
    if jit:
      value_and_grad, grad = jax.jit(value_and_grad), jax.jit(grad)
    loss, grads = value_and_grad(net, x, y)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
    chex.assert_trees_all_close(grads.params, ref_grads, rtol=1e-6, atol=0)
    chex.assert_trees_all_close(grad(net, x, y).params, ref_grads, rtol=1e-6,
                                atol=0)

  def test_gradients_have_the_shape_of_parameters(self):
    net = pax.Sequential(pax.Linear(3, 4), jax.nn.relu, pax.Linear(4, 2))
    x, y = _data()
    grads = pax.grad(_mse)(net, x, y)
    chex.assert_trees_all_equal_structs(grads, net.parameters())
    self.assertIsInstance(grads, pax.Sequential)
    self.assertEqual(grads[0].weight.shape, (3, 4))

  def test_only_trainable_leaves_are_differentiated(self):
    model = Stateful()

    @pax.pure
    def loss_fn(m, x):
      y = m(x)
      return jnp.sum(y ** 2), (y, m)

    (loss, (y, new_model)), grads = pax.value_and_grad(
        loss_fn, has_aux=True)(model, jnp.array([3.0, 4.0]))
    self.assertIsNone(grads.count)
    np.testing.assert_allclose(grads.w, 2 * jnp.array([9.0, 32.0]))
    np.testing.assert_allclose(loss, 9.0 + 64.0)
    np.testing.assert_allclose(y, [3.0, 8.0])
    self.assertEqual(float(new_model.count), 1.0)
    self.assertEqual(float(model.count), 0.0)  # The input is unchanged.

  def test_grad_has_aux(self):
    net = pax.Linear(3, 2)
    x, y = _data()
    grads, aux = pax.grad(lambda m, x, y: (_mse(m, x, y), "aux"),
                          has_aux=True)(net, x, y)
    self.assertEqual(aux, "aux")
    chex.assert_trees_all_close(grads, pax.grad(_mse)(net, x, y))

  def test_keyword_arguments_reach_the_function(self):
    net = pax.Linear(3, 2)
    x, y = _data()
    loss, _ = pax.value_and_grad(lambda m, x, *, y: _mse(m, x, y))(net, x,
                                                                     y=y)
    np.testing.assert_allclose(loss, _mse(net, x, y), rtol=1e-6)

  def test_jax_grad_options_pass_through(self):

    class IntModule(pax.Module):
      parameters = pax.parameters_method("w", "n")

      def __init__(self):
        super().__init__()
        self.w = jnp.array(2.0)
        self.n = jnp.array(3)

    grads = pax.grad(lambda m: m.w * m.n, allow_int=True)(IntModule())
    self.assertEqual(float(grads.w), 3.0)
    self.assertEqual(grads.n.dtype, jax.dtypes.float0)

  def test_holomorphic(self):

    class C(pax.Module):
      parameters = pax.parameters_method("z")

      def __init__(self):
        super().__init__()
        self.z = jnp.array(1.0 + 2.0j)

    g = pax.grad(lambda m: m.z ** 2, holomorphic=True)(C())
    np.testing.assert_allclose(g.z, 2.0 + 4.0j)


class GradErrorsTest(parameterized.TestCase):

  @parameterized.parameters("grad", "value_and_grad")
  def test_first_argument_must_be_a_module(self, api):
    net = pax.Linear(3, 2)
    fn = getattr(pax, api)(lambda params, x: jnp.sum(x))
    with self.assertRaisesRegex(
        TypeError, r"(?s)first argument must be a pax\.Module.*got dict.*"
        r"Haiku params dict.*Fix.*\(model, x, y\)"):
      fn(net.params, jnp.ones(3))

  @parameterized.parameters("grad", "value_and_grad")
  def test_loss_must_be_scalar(self, api):
    fn = getattr(pax, api)(lambda m, x: m(x))
    with self.assertRaisesRegex(
        TypeError, r"(?s)must be a scalar \(shape \(\)\), got shape \(4, 2\)"
        r".*jnp\.mean"):
      fn(pax.Linear(3, 2), jnp.ones((4, 3)))

  def test_loss_must_be_float(self):

    class IntModule(pax.Module):
      parameters = pax.parameters_method("n")

      def __init__(self):
        super().__init__()
        self.n = jnp.array(3)

    with self.assertRaisesRegex(
        TypeError, r"(?s)floating point dtype, got int32.*astype"):
      pax.grad(lambda m: m.n * 2, allow_int=True)(IntModule())

  def test_has_aux_needs_a_pair(self):
    with self.assertRaisesRegex(
        TypeError, r"(?s)has_aux=True.*must return a pair `\(loss, aux\)`, "
        r"got an array.*Fix"):
      pax.grad(lambda m, x: jnp.sum(m(x)), has_aux=True)(
          pax.Linear(3, 2), jnp.ones((1, 3)))

  def test_tuple_without_has_aux(self):
    with self.assertRaisesRegex(
        TypeError, r"(?s)returned a tuple of length 2.*pass `has_aux=True`"):
      pax.value_and_grad(lambda m, x: (jnp.sum(m(x)), m))(
          pax.Linear(3, 2), jnp.ones((1, 3)))

  def test_argnums_is_rejected(self):
    with self.assertRaisesRegex(TypeError, r"(?s)argnums.*not supported.*Fix"):
      pax.grad(_mse, argnums=1)
    with self.assertRaisesRegex(TypeError, r"argnums"):
      pax.grad(_mse, (0, 1))

  def test_unknown_option(self):
    with self.assertRaisesRegex(TypeError, r"unexpected keyword.*'foo'"):
      pax.value_and_grad(_mse, foo=1)

  def test_not_callable(self):
    with self.assertRaisesRegex(TypeError, "expects a function"):
      pax.grad(3)


class ScanTest(parameterized.TestCase):

  @staticmethod
  def _step(carry, x):
    h = jnp.tanh(carry @ jnp.eye(3) * 0.5 + x["a"] + x["b"][..., None])
    return h, {"h": h, "sum": jnp.sum(h, axis=-1)}

  def test_time_major_matches_lax_scan(self):
    xs = {"a": jnp.linspace(0, 1, 5 * 2 * 3).reshape(5, 2, 3),
          "b": jnp.linspace(-1, 1, 10).reshape(5, 2)}
    init = jnp.zeros((2, 3))
    got = pax.scan(self._step, init, xs)
    want = jax.lax.scan(self._step, init, xs)
    chex.assert_trees_all_close(got, want, rtol=1e-6)

  @parameterized.parameters(1, 2)
  def test_batch_major_matches_python_loop(self, unroll):
    batch, time = 2, 5
    xs = {"a": jnp.linspace(0, 1, batch * time * 3).reshape(batch, time, 3),
          "b": jnp.linspace(-1, 1, batch * time).reshape(batch, time)}
    init = jnp.zeros((batch, 3))
    carry, ys = pax.scan(self._step, init, xs, unroll=unroll,
                         time_major=False)
    want_carry, hs, sums = init, [], []
    for t in range(time):
      want_carry, y = self._step(want_carry,
                                 jax.tree_util.tree_map(lambda v: v[:, t], xs))
      hs.append(y["h"])
      sums.append(y["sum"])
    chex.assert_trees_all_close(carry, want_carry, rtol=1e-6)
    self.assertEqual(ys["h"].shape, (batch, time, 3))
    self.assertEqual(ys["sum"].shape, (batch, time))
    chex.assert_trees_all_close(ys["h"], jnp.stack(hs, axis=1), rtol=1e-6)
    chex.assert_trees_all_close(ys["sum"], jnp.stack(sums, axis=1),
                                rtol=1e-6)

  def test_batch_major_scalar_outputs_stay_time_major(self):
    xs = jnp.ones((2, 4, 3))
    _, ys = pax.scan(lambda c, x: (c, jnp.sum(x)), 0.0, xs, time_major=False)
    self.assertEqual(ys.shape, (4,))

  @parameterized.parameters(True, False)
  def test_xs_none_with_length(self, time_major):
    carry, ys = pax.scan(lambda c, _: (c + 1.0, c * 2.0), jnp.array(0.0),
                         None, length=4, time_major=time_major)
    self.assertEqual(float(carry), 4.0)
    np.testing.assert_allclose(ys, [0.0, 2.0, 4.0, 6.0])

  def test_carry_a_module(self):
    net = pax.Linear(3, 3)

    @pax.pure
    def step(model, x):
      return model, model(x)

    xs = jnp.ones((4, 2, 3))
    _, ys = pax.scan(step, net, xs, time_major=True)
    chex.assert_trees_all_close(ys, jnp.stack([net(x) for x in xs]),
                                rtol=1e-6)

  def test_under_jit(self):
    xs = jnp.ones((2, 6, 3))
    f = jax.jit(lambda xs: pax.scan(lambda c, x: (c + x, c), jnp.zeros((2, 3)),
                                    xs, time_major=False))
    carry, ys = f(xs)
    self.assertEqual(ys.shape, (2, 6, 3))
    np.testing.assert_allclose(carry, 6.0)


class ScanErrorsTest(parameterized.TestCase):

  def test_xs_lengths_differ(self):
    xs = {"a": jnp.ones((5, 3)), "b": jnp.ones((4, 3))}
    with self.assertRaisesRegex(
        ValueError, r"(?s)different lengths along the scanned axis.*"
        r"xs\['a'\]: shape \(5, 3\), length 5.*xs\['b'\]: shape \(4, 3\), "
        r"length 4.*time_major=False"):
      pax.scan(lambda c, x: (c, x), 0.0, xs)

  def test_batch_major_lengths_differ(self):
    xs = (jnp.ones((2, 5, 3)), jnp.ones((2, 4)))
    with self.assertRaisesRegex(ValueError, r"(?s)axis 1 \(time_major=False"):
      pax.scan(lambda c, x: (c, x), 0.0, xs, time_major=False)

  def test_batch_major_needs_two_axes(self):
    with self.assertRaisesRegex(ValueError, r"(?s)no axis 1 to scan over"):
      pax.scan(lambda c, x: (c, x), 0.0, jnp.ones((5,)), time_major=False)

  def test_xs_none_needs_length(self):
    with self.assertRaisesRegex(ValueError,
                                r"(?s)number of steps is unknown.*length=10"):
      pax.scan(lambda c, x: (c, x), 0.0, None)

  def test_length_mismatch(self):
    with self.assertRaisesRegex(
        ValueError, r"`length=3` does not match the length of `xs` \(5\)"):
      pax.scan(lambda c, x: (c, x), 0.0, jnp.ones((5, 2)), length=3)

  def test_bad_length_type(self):
    with self.assertRaisesRegex(TypeError, "non-negative int"):
      pax.scan(lambda c, x: (c, x), 0.0, None, length=2.5)


if __name__ == "__main__":
  quick_exit.main()
