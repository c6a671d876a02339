"""The Haiku bridge: from_haiku, to_haiku, haiku_call, Haiku dicts, save/load."""

import gc
import os
import pickle
import weakref

from absl.testing import absltest
from absl.testing import parameterized
import chex
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

import pax_haiku as pax
from pax_haiku._src import haiku_bridge
import quick_exit  # tests/quick_exit.py, beside this file

X = jnp.linspace(-1.0, 1.0, 12).reshape(3, 4)
KEY = jax.random.PRNGKey(0)


def mlp(x):
  return hk.nets.MLP([8, 2])(x)


def bn_fn(x, is_training):
  return hk.BatchNorm(True, True, 0.9)(x, is_training)


def dropout_fn(x):
  return hk.dropout(hk.next_rng_key(), 0.5, x)


class Net(pax.Module):
  """Two MLPs (same Haiku names) and two Linears under one parent."""

  def __init__(self):
    super().__init__()
    self.enc = pax.from_haiku(mlp)(X, rng_key=KEY)
    self.dec = pax.from_haiku(mlp)(jnp.ones((1, 2)), rng_key=KEY)
    self.fc = pax.Linear(2, 2)
    self.norm = pax.from_haiku(bn_fn)(jnp.ones((1, 2)))

  def __call__(self, x):
    return self.norm(self.fc(self.dec(self.enc(x))))


def assert_same_arrays(test, a, b):
  """Bit-for-bit equality of two Haiku dicts (same keys, equal arrays)."""
  chex.assert_trees_all_equal_structs(a, b)
  chex.assert_trees_all_equal(a, b)


class FromHaikuTest(parameterized.TestCase):

  def test_mlp_same_params_and_outputs_as_haiku(self):
    net = pax.from_haiku(mlp)(X, rng_key=KEY)
    f = hk.transform_with_state(mlp)
    params, state = f.init(KEY, X)
    assert_same_arrays(self, net.params, params)
    self.assertEqual(net.state, state)
    out, _ = f.apply(params, state, None, X)
    np.testing.assert_array_equal(net(X), out)
    np.testing.assert_array_equal(jax.jit(lambda m, x: m(x))(net, X),
                                  jax.jit(f.apply)(params, state, None, X)[0])

  @parameterized.parameters("transform", "transform_with_state",
                            "without_apply_rng")
  def test_accepts_transformed(self, kind):
    if kind == "transform":
      t = hk.transform(mlp)
    elif kind == "transform_with_state":
      t = hk.transform_with_state(mlp)
    else:
      t = hk.without_apply_rng(hk.transform(mlp))
    net = pax.from_haiku(t)(X, rng_key=KEY)
    assert_same_arrays(self, net.params, hk.transform(mlp).init(KEY, X))

  def test_hk_module_class_eager_and_lazy(self):
    eager = pax.from_haiku(hk.Linear, 3)(X, rng_key=KEY)
    ref = hk.transform(lambda x: hk.Linear(3)(x)).init(KEY, X)
    assert_same_arrays(self, eager.params, ref)
    lazy = pax.from_haiku(hk.Linear, 3).lazy(rng_key=KEY)
    with self.assertRaisesRegex(ValueError, "purecall"):
      lazy.params  # pylint: disable=pointless-statement
    with self.assertRaisesRegex(ValueError, "purecall"):
      lazy(X)
    net, y = pax.purecall(lazy, X)
    assert_same_arrays(self, net.params, ref)
    np.testing.assert_array_equal(y, eager(X))
    # Same class and arguments: same treedef (one jit cache entry).
    self.assertEqual(jax.tree_util.tree_structure(eager),
                     jax.tree_util.tree_structure(net))

  def test_batchnorm_state_train_vs_eval(self):
    bn = pax.from_haiku(bn_fn)(X)
    bn_train, _ = pax.purecall(bn, X * 2 + 1)
    changed = jax.tree_util.tree_map(lambda a, b: bool((a != b).any()),
                                     bn.state, bn_train.state)
    self.assertTrue(any(jax.tree_util.tree_leaves(changed)))
    bn_eval, y_eval = pax.purecall(bn.eval(), X * 2 + 1)
    assert_same_arrays(self, bn.state, bn_eval.state)
    # Eval mode uses the moving averages, as Haiku does with is_training=False.
    f = hk.transform_with_state(bn_fn)
    ref, _ = f.apply(bn.params, bn.state, None, X * 2 + 1, is_training=False)
    np.testing.assert_array_equal(y_eval, ref)
    with self.assertRaisesRegex(ValueError, "purecall"):
      bn(X)  # Train mode updates state: needs pure.
    bn.eval()(X)  # Eval mode does not.

  def test_dropout_draws_differ_call_to_call(self):
    drop = pax.from_haiku(dropout_fn)(jnp.ones((100,)))
    self.assertIn("rng_key", drop.state["~"])
    d1, y1 = pax.purecall(drop, jnp.ones((100,)))
    d2, y2 = pax.purecall(d1, jnp.ones((100,)))
    self.assertTrue(bool((y1 != y2).any()))
    _, y1_again = pax.purecall(drop, jnp.ones((100,)))
    np.testing.assert_array_equal(y1, y1_again)  # Deterministic from state.
    with self.assertRaisesRegex(ValueError, "purecall"):
      drop(jnp.ones((100,)))
    # Eval mode keeps the key: inference needs no pure and is repeatable.
    ev = drop.eval()
    np.testing.assert_array_equal(ev(jnp.ones((100,))), ev(jnp.ones((100,))))

  def test_module_without_init_and_duplicate_attr_names(self):
    class Empty(pax.Module):
      pass

    self.assertEqual(jax.tree_util.tree_leaves(Empty()), [])

    class Clash(pax.HaikuModule):

      def __init__(self):
        super().__init__()
        self._init_haiku(mlp, (X,), {}, KEY)

      def _haiku_attr_name(self, bundle, name, role):
        return name  # Both MLP layers have a `b` and a `w`.

    with self.assertRaisesRegex(ValueError, "two Haiku leaves.*attribute `b`"):
      Clash()

  def test_rng_needed_only_after_init_is_a_clear_error(self):
    def sometimes(x, use_noise=False):
      if use_noise:
        return x + jax.random.normal(hk.next_rng_key(), x.shape)
      return hk.Linear(2)(x)

    m = pax.from_haiku(sometimes)(X)
    with self.assertRaisesRegex(ValueError, "needs_rng=True"):
      pax.purecall(m, X, use_noise=True)
    m = pax.from_haiku(sometimes, needs_rng=True)(X)
    _, y = pax.purecall(m, jnp.zeros((3, 2)), use_noise=True)
    self.assertEqual(y.shape, (3, 2))

  def test_bad_inputs(self):
    with self.assertRaisesRegex(TypeError, "PRNG key"):
      pax.from_haiku(mlp)(X, rng_key=0)
    with self.assertRaisesRegex(TypeError, "expects a Haiku function"):
      pax.from_haiku(3)
    with self.assertRaisesRegex(TypeError, "only for hk.Module classes"):
      pax.from_haiku(mlp, 3)


class ToHaikuTest(parameterized.TestCase):

  def test_init_returns_exactly_params_and_state(self):
    net = Net()
    f = pax.to_haiku(net)
    params, state = f.init(None, X)
    assert_same_arrays(self, params, net.params)
    assert_same_arrays(self, state, net.state)
    for bundle in params:
      for name in params[bundle]:
        self.assertIs(params[bundle][name], net.params[bundle][name])

  def test_names_follow_haiku_nesting(self):
    self.assertEqual(sorted(Net().params), [
        "net/~/batch_norm", "net/~/linear", "net/~/mlp/~/linear_0",
        "net/~/mlp/~/linear_1", "net/~/mlp_1/~/linear_0",
        "net/~/mlp_1/~/linear_1"])
    self.assertEqual(sorted(Net().state), [
        "net/~/batch_norm/~/mean_ema", "net/~/batch_norm/~/var_ema"])

  @parameterized.parameters(True, False)
  def test_apply_reproduces_module_call(self, training):
    net = Net() if training else Net().eval()
    f = pax.to_haiku(net)
    params, state = f.init(None, X)
    out, new_state = f.apply(params, state, None, X)
    net2, expected = pax.purecall(net, X)
    np.testing.assert_array_equal(out, expected)
    assert_same_arrays(self, new_state, net2.state)
    out_jit, _ = jax.jit(f.apply)(params, state, None, X)
    expected_jit = jax.jit(lambda m, x: pax.purecall(m, x)[1])(net, X)
    np.testing.assert_array_equal(out_jit, expected_jit)

  def test_round_trip_module_haiku_module(self):
    net = Net()
    back = pax.from_haiku(pax.to_haiku(net))(X)
    assert_same_arrays(self, back.params, net.params)
    assert_same_arrays(self, back.state, net.state)
    _, y1 = pax.purecall(back, X)
    _, y2 = pax.purecall(net, X)
    np.testing.assert_array_equal(y1, y2)

  def test_round_trip_haiku_module_haiku(self):
    f = hk.transform_with_state(mlp)
    params, state = f.init(KEY, X)
    g = pax.to_haiku(pax.from_haiku(f)(X, rng_key=KEY))
    params2, state2 = g.init(None, X)
    assert_same_arrays(self, params2, params)
    self.assertEqual(state2, state)
    np.testing.assert_array_equal(g.apply(params2, state2, None, X)[0],
                                  f.apply(params, state, None, X)[0])

  def test_inline_in_foreign_transform_with_gradients(self):
    net = Net()

    class Outer(hk.Module):

      def __call__(self, x):
        return pax.haiku_call(net, hk.Linear(4)(x))

    f = hk.transform_with_state(lambda x: Outer()(x))
    params, state = f.init(KEY, X)
    self.assertIs(params["outer/~/net/~/linear"]["w"], net.fc.weight)
    self.assertIn("outer/~/net/~/batch_norm/~/mean_ema", state)

    def loss(p):
      return jnp.sum(f.apply(p, state, None, X)[0] ** 2)

    # One compiled program (an eager grad compiles every primitive).
    grads = jax.jit(jax.grad(loss))(params)
    for g in jax.tree_util.tree_leaves(grads):
      self.assertTrue(np.isfinite(g).all())
    self.assertGreater(np.abs(grads["outer/~/net/~/linear"]["w"]).sum(), 0.0)

  def test_lift_into_foreign_transform(self):
    net = Net()
    inner = pax.to_haiku(net)

    def outer(x):
      init, updater = hk.lift_with_state(inner.init, name="inner",
                                         allow_reuse=True)
      p, s = init(None, x)
      y, s = inner.apply(p, s, None, x)
      updater.update(s)
      return y

    f = hk.transform_with_state(outer)
    params, state = f.init(KEY, X)
    self.assertIs(params["inner/net/~/linear"]["w"], net.fc.weight)
    grads = jax.jit(jax.grad(
        lambda p: jnp.sum(f.apply(p, state, None, X)[0])))(params)
    for g in jax.tree_util.tree_leaves(grads):
      self.assertTrue(np.isfinite(g).all())

  def test_haiku_call_outside_transform(self):
    with self.assertRaisesRegex(ValueError, "inside a Haiku transform"):
      pax.haiku_call(pax.Linear(2, 2), X)


def _round_trip(module):
  return pickle.loads(pickle.dumps(module))


class PickleTest(parameterized.TestCase):
  """from_haiku modules pickle whenever their Haiku function does."""

  @parameterized.named_parameters(
      ("function", lambda: pax.from_haiku(mlp)(X, rng_key=KEY), X),
      ("hk_module_class_with_ctor_args",
       lambda: pax.from_haiku(hk.Linear, 3, with_bias=False)(X), X),
      ("transform_with_state",
       lambda: pax.from_haiku(hk.transform_with_state(mlp))(X), X),
      ("state_and_is_training", lambda: pax.from_haiku(bn_fn)(X), X),
      ("rng_key_state", lambda: pax.from_haiku(dropout_fn)(X), X),
  )
  def test_round_trip_same_class_params_and_outputs(self, make, x):
    net = make()
    back = _round_trip(net)
    self.assertIs(pax.module_class(back), pax.HaikuModule)
    self.assertIs(type(back), type(net))
    self.assertEqual(repr(back), repr(net))
    self.assertEqual(jax.tree_util.tree_structure(back),
                     jax.tree_util.tree_structure(net))
    assert_same_arrays(self, back.params, net.params)
    assert_same_arrays(self, back.state, net.state)
    new_net, y = pax.purecall(net, x)
    new_back, y_back = pax.purecall(back, x)
    np.testing.assert_array_equal(y_back, y)
    assert_same_arrays(self, new_back.state, new_net.state)

  def test_lazy_module_round_trip(self):
    lazy = pax.from_haiku(hk.Linear, 3).lazy(rng_key=KEY)
    net, y = pax.purecall(_round_trip(lazy), X)
    ref, y_ref = pax.purecall(lazy, X)
    assert_same_arrays(self, net.params, ref.params)
    np.testing.assert_array_equal(y, y_ref)

  def test_class_is_importable_under_its_name(self):
    net = pax.from_haiku(mlp)(X, rng_key=KEY)
    self.assertEqual(repr(net), "HaikuModule(fn=mlp)")
    self.assertEqual(type(net).__qualname__, "HaikuModule")
    self.assertIs(haiku_bridge.HaikuModule, pax.HaikuModule)
    self.assertIs(pax.module_class(net), pax.HaikuModule)

  def test_haiku_module_call_pickles_by_value(self):
    call = haiku_bridge.HaikuModuleCall(hk.Linear, 3, method="__call__",
                                        with_bias=False)
    back = _round_trip(call)
    self.assertEqual(back, call)
    self.assertEqual(hash(back), hash(call))
    self.assertEqual(repr(back), "Linear(3, with_bias=False)")

  def test_direct_construction(self):
    net = pax.HaikuModule(mlp, (X,), rng_key=KEY)
    assert_same_arrays(self, net.params, pax.from_haiku(mlp)(
        X, rng_key=KEY).params)
    with self.assertRaisesRegex(TypeError, "needs a Haiku function"):
      pax.HaikuModule()
    with self.assertRaisesRegex(TypeError, "as a tuple"):
      pax.HaikuModule(mlp, X)
    with self.assertRaisesRegex(TypeError, "expects a Haiku function"):
      pax.HaikuModule(3, (X,))


class TransformedCacheTest(absltest.TestCase):

  def test_reused_for_one_function(self):
    self.assertIs(haiku_bridge._transformed(mlp),  # pylint: disable=protected-access
                  haiku_bridge._transformed(mlp))  # pylint: disable=protected-access

  def test_stays_bounded_and_lets_functions_go(self):
    cache = haiku_bridge._transformed  # pylint: disable=protected-access
    size = haiku_bridge.TRANSFORMED_CACHE_SIZE

    def make():
      return lambda x: hk.Linear(2)(x)

    first = make()
    cache(first)
    first_ref = weakref.ref(first)
    del first
    for _ in range(size + 10):
      cache(make())
    self.assertLessEqual(cache.cache_info().currsize, size)
    gc.collect()
    self.assertIsNone(first_ref(), "the cache still holds a function it "
                      "should have dropped")


class HaikuDictTest(parameterized.TestCase):

  def test_update_parameters_from_haiku_params(self):
    f = hk.transform(lambda x: hk.Linear(3)(x))
    params = f.init(jax.random.PRNGKey(3), X)
    net = pax.Linear(4, 3).update_parameters(params)
    np.testing.assert_array_equal(net(X), f.apply(params, None, X))

  def test_update_parameters_reports_bad_mapping(self):
    net = pax.Linear(4, 3)
    with self.assertRaisesRegex(ValueError, r"params\['linear'\]\['b'\]"):
      net.update_parameters({"linear": {"w": net.weight}})
    with self.assertRaisesRegex(ValueError, r"params\['lin'\]\['w'\]"):
      net.update_parameters({"lin": {"w": net.weight}, "linear": net.params[
          "linear"]})
    with self.assertRaisesRegex(ValueError, r"shape \(3, 3\).*expects \(4, 3\)"):
      net.update_parameters({"linear": {"w": jnp.ones((3, 3)),
                                        "b": net.bias}})

  def test_dtype_mismatch_and_missing_directory(self):
    net = pax.Linear(3, 2)
    with self.assertRaisesRegex(ValueError,
                                r"(?s)dtype int32 but the module expects "
                                r"float32.*astype"):
      net.update_parameters({"linear": {"w": jnp.ones((3, 2), jnp.int32),
                                        "b": net.bias}})
    with self.assertRaisesRegex(ValueError, "(?s)does not exist.*makedirs"):
      pax.save("/nonexistent_dir_pax/net.npz", net)

  def test_save_load_interoperates_with_plain_haiku(self):
    tmp = self.create_tempdir().full_path
    net = Net()
    path = os.path.join(tmp, "net.npz")
    pax.save(path, net)
    params, state = pax.load_haiku(path)
    assert_same_arrays(self, params, net.params)
    assert_same_arrays(self, state, net.state)
    loaded = pax.load(path, Net())
    np.testing.assert_array_equal(loaded.eval()(X), net.eval()(X))
    # Weights trained by plain Haiku load into pax and back.
    f = hk.transform(mlp)
    hk_params = f.init(jax.random.PRNGKey(9), X)
    pax.save_haiku(path, hk_params)
    m = pax.load(path, pax.from_haiku(mlp)(X))
    np.testing.assert_array_equal(m(X), f.apply(hk_params, None, X))
    self.assertEqual([f for f in os.listdir(tmp) if f.endswith(".tmp")], [])

  def test_load_rejects_corrupt_and_mismatched_files(self):
    tmp = self.create_tempdir().full_path
    path = os.path.join(tmp, "net.npz")
    pax.save(path, pax.Linear(2, 2))
    with self.assertRaisesRegex(ValueError, r"shape \(2,\).*expects \(3,\)"):
      pax.load(path, pax.Linear(3, 3))
    with open(path, "rb") as f:
      data = f.read()
    with open(path, "wb") as f:
      f.write(data[: len(data) // 2])
    with self.assertRaisesRegex(ValueError, "truncated"):
      pax.load(path, pax.Linear(2, 2))


if __name__ == "__main__":
  quick_exit.main()
