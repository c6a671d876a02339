"""PAX semantics of pax.Module: pytree, immutability, pure, parameters."""

import copy
import pickle
import threading

from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np

import pax_haiku as pax
from pax_haiku._src import context
from pax_haiku._src import module_layout
import quick_exit  # tests/quick_exit.py, beside this file


def relu(x):  # Picklable by reference (jax.nn.relu is not).
  return jnp.maximum(x, 0.0)


class Counter(pax.Module):
  parameters = pax.parameters_method("weight")

  def __init__(self):
    super().__init__()
    self.weight = jnp.array(1.0)
    self.count = jnp.array(0)
    self.step_size = 1

  def __call__(self, x):
    self.count = self.count + self.step_size
    return x * self.weight


class ModuleTest(parameterized.TestCase):

  def test_seed_parameters_method(self):
    class Linear(pax.Module):
      parameters = pax.parameters_method("weight")

      def __init__(self):
        self.weight = jnp.array(1.0)

    fc = Linear()
    self.assertEqual(fc, fc.parameters())
    self.assertEqual(fc.params, {"linear": {"weight": fc.weight}})

  def test_leaves_and_static_fields(self):
    c = Counter()
    leaves = jax.tree_util.tree_leaves(c)
    self.assertLen(leaves, 2)  # weight and count; step_size is static.
    self.assertEqual(c.step_size, 1)
    self.assertIsInstance(c, Counter)
    self.assertIs(pax.module_class(c), Counter)
    self.assertEqual(c.params, {"counter": {"weight": c.weight}})
    self.assertEqual(c.state, {"counter": {"count": c.count}})

  def test_parameters_keeps_only_trainable(self):
    p = Counter().parameters()
    self.assertIsNone(p.count)
    self.assertEqual(jax.tree_util.tree_leaves(p), [p.weight])

  def test_parameters_method_without_submodules(self):
    class Outer(pax.Module):
      parameters = pax.parameters_method("w", submodules=False)

      def __init__(self):
        self.w = jnp.ones(2)
        self.inner = pax.Linear(2, 2)

    p = Outer().parameters()
    self.assertLen(jax.tree_util.tree_leaves(p), 1)

  def test_mutation_outside_pure_names_pure(self):
    c = Counter()
    with self.assertRaisesRegex(ValueError, r"pax\.pure"):
      c.count = jnp.array(5)
    with self.assertRaisesRegex(ValueError, r"pax\.purecall"):
      c(1.0)
    with self.assertRaisesRegex(ValueError, r"pax\.pure"):
      del c.count

  def test_pure_never_changes_inputs(self):
    c = Counter()
    before = c.count

    @pax.pure
    def run(m):
      m(1.0)
      m.extra = jnp.zeros(3)
      return m

    c2 = run(c)
    self.assertIs(c.count, before)
    self.assertFalse(hasattr(c, "extra"))
    self.assertEqual(int(c2.count), 1)
    self.assertEqual(c2.extra.shape, (3,))
    self.assertIsNot(c2, c)
    # New data attribute became a pytree leaf.
    self.assertLen(jax.tree_util.tree_leaves(c2), 3)

  def test_purecall_and_module_and_value(self):
    c = Counter()
    c1, y = pax.purecall(c, 2.0)
    self.assertEqual(float(y), 2.0)
    self.assertEqual(int(c1.count), 1)
    c2, y = pax.module_and_value(c1)(3.0)
    self.assertEqual(int(c2.count), 2)
    self.assertEqual(int(c1.count), 1)

    class WithMethod(Counter):
      def bump(self, n):
        self.count = self.count + n
        return self.count

    m, v = pax.module_and_value(WithMethod().bump)(5)
    self.assertEqual(int(v), 5)
    self.assertEqual(int(m.count), 5)

  def test_mutation_in_deeper_trace_is_refused(self):
    @pax.pure
    def bad(m):
      def inner(x):
        m.count = x  # m belongs to the outer (eager) trace.
        return x
      return jax.jit(inner)(jnp.array(1))

    with self.assertRaisesRegex(ValueError, r"pax\.pure"):
      bad(Counter())

  def test_mutation_inside_jit_of_pure_is_allowed(self):
    @jax.jit
    def step(m, x):
      return pax.purecall(m, x)

    m, y = step(Counter(), 2.0)
    self.assertEqual(int(m.count), 1)

  def test_frozen_parameters_have_no_leaves(self):
    net = pax.Sequential(pax.Linear(2, 3), jax.nn.relu, pax.Linear(3, 1))
    frozen = pax.freeze_parameters(net)
    self.assertEqual(jax.tree_util.tree_leaves(frozen.parameters()), [])
    self.assertLen(jax.tree_util.tree_leaves(frozen), 4)
    # Frozen params are still Haiku params (not state).
    self.assertEqual(set(frozen.params), set(net.params))
    thawed = pax.unfreeze_parameters(frozen)
    self.assertLen(jax.tree_util.tree_leaves(thawed.parameters()), 4)

  def test_threads_purecall_concurrently(self):
    errors, results = [], {}

    def work(i):
      try:
        m = Counter()
        for _ in range(20 + i):
          m, _ = pax.purecall(m, 1.0)
        results[i] = int(m.count)
        with self.assertRaises(ValueError):
          m.count = 0  # Still immutable outside pure in every thread.
      except Exception as e:  # pylint: disable=broad-except
        errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
      t.start()
    for t in threads:
      t.join()
    self.assertEqual(errors, [])
    self.assertEqual(results, {i: 20 + i for i in range(8)})

  def test_update_parameters_round_trip(self):
    net = pax.Sequential(pax.Linear(2, 3), jax.nn.relu, pax.Linear(3, 1))
    params = jax.tree_util.tree_map(lambda x: x + 1, net.parameters())
    new = net.update_parameters(params)
    chex.assert_trees_all_equal(new.parameters(), params)
    new2 = pax.update_parameters(Counter(), params=Counter().parameters())
    self.assertIsInstance(new2, Counter)

  def test_cached_structure_never_goes_stale(self):
    # parameters()/update_parameters() cache the treedef on frozen modules;
    # every way a module can change must still be seen.
    net = pax.Sequential(pax.Linear(2, 3), jax.nn.relu, pax.Linear(3, 1))
    self.assertIs(net.parameters(), net)  # Cached now.

    @pax.pure
    def grow(m):
      m.extra = jnp.zeros(2)  # A new leaf, and not trainable.
      inner = m.parameters()  # In pure: not cached, sees the new leaf.
      return m, inner

    grown, inner = grow(net)
    self.assertIsNone(inner.extra)
    self.assertIsNone(grown.parameters().extra)
    self.assertIs(net.parameters(), net)  # The input is unchanged.
    frozen = pax.freeze_parameters(net)
    self.assertEqual(jax.tree_util.tree_leaves(frozen.parameters()), [])
    new = net.update_parameters(
        jax.tree_util.tree_map(jnp.zeros_like, net.parameters()))
    self.assertEqual(float(jnp.sum(new[0].weight)), 0.0)
    with self.assertRaisesRegex(ValueError, "extra leaf"):
      net.update_parameters(pax.Linear(2, 3))
    # The cache is a slot, not an attribute: not in replace, pickle, copies
    # or equality.
    replaced = pax.Linear(1, 1).replace(bias=jnp.ones(1))
    self.assertIsNone(module_layout.get_memo(replaced))
    linear = pax.Linear(2, 2)
    self.assertIs(linear.parameters(), linear)
    self.assertIsNotNone(module_layout.get_memo(linear))
    self.assertNotIn("_pax_memo", vars(linear))
    for other in (pickle.loads(pickle.dumps(linear)), copy.deepcopy(linear),
                  linear.copy()):
      self.assertIsNone(module_layout.get_memo(other))
      pax.assert_structure_equal(other, linear)

  def test_update_parameters_mismatch_names_path(self):
    net = pax.Sequential(pax.Linear(2, 3), pax.Linear(3, 1))
    other = pax.Sequential(pax.Linear(2, 3), pax.Linear(3, 1), pax.Linear(1, 1))
    with self.assertRaisesRegex(ValueError, r"extra leaf at `\.layers\[2\]"):
      net.update_parameters(other.parameters())
    with self.assertRaisesRegex(ValueError,
                                r"params\['sequential/~/linear_1'\]\['b'\]"):
      net.update_parameters({"sequential/~/linear": net.params[
          "sequential/~/linear"]})

  def test_non_module_arguments(self):
    with self.assertRaisesRegex(TypeError, "expects a pax.Module"):
      pax.purecall(lambda x: x, 1.0)
    with self.assertRaisesRegex(TypeError, "expects a pax.Module"):
      pax.update_parameters({"a": 1}, params={})
    with self.assertRaisesRegex(TypeError, "expects a pax.Module"):
      pax.to_haiku(jnp.ones(3))

  def test_class_attribute_array_is_an_error(self):
    # As in PAX: defining the class is fine, creating an instance is not.
    class Bad(pax.Module):
      w = jnp.ones(3)

    with self.assertRaisesRegex(ValueError, r"(?s)Class attribute `Bad\.w`.*__init__"):
      Bad()

  def test_module_reachable_twice_is_an_error(self):
    fc = pax.Linear(2, 2)

    class Twice(pax.Module):
      def __init__(self):
        self.a = fc
        self.b = fc

    with self.assertRaisesRegex(ValueError, "reachable twice"):
      Twice()
    with self.assertRaisesRegex(ValueError, "reachable twice"):
      pax.Sequential(fc, fc)

    @pax.pure
    def share(net):
      net.layers = (net.layers[0], net.layers[0])
      return net

    with self.assertRaisesRegex(ValueError, "reachable twice"):
      share(pax.Sequential(pax.Linear(2, 2), pax.Linear(2, 2)))

  def test_mixed_attribute_keeps_its_static_leaves(self):
    # As in PAX: arrays/modules are pytree data, other leaves ride in the
    # treedef and come back unchanged.
    class Mixed(pax.Module):
      def __init__(self):
        self.layers = [pax.Linear(2, 2), "relu", 3, jax.nn.relu]

    m = Mixed()
    leaves, treedef = jax.tree_util.tree_flatten(m)
    self.assertLen(leaves, 2)
    back = treedef.unflatten(leaves)
    self.assertEqual(back.layers[1:], ["relu", 3, jax.nn.relu])
    self.assertIs(type(back.layers[0]), pax.Linear)
    self.assertIs(jax.jit(lambda x: x)(m).layers[3], jax.nn.relu)
    other = Mixed()
    other = pax.pure(lambda o: (setattr(o, "layers", o.layers[:2] + [4, jax.nn.relu]), o)[1])(other)
    self.assertNotEqual(jax.tree_util.tree_structure(other), treedef)

  def test_custom_parameters_without_method_is_an_error(self):
    with self.assertRaisesRegex(TypeError, "parameters_method"):
      class Custom(pax.Module):  # pylint: disable=unused-variable
        def parameters(self):
          return self

  def test_eq_and_hash(self):
    a = pax.Linear(2, 2)
    b = a.copy()
    self.assertEqual(a, b)
    self.assertEqual(hash(a), hash(b))
    self.assertNotEqual(a, pax.Linear(2, 2))
    self.assertNotEqual(a, a.replace(bias=jnp.zeros(2)))

  def test_replace_replace_node_apply(self):
    net = pax.Sequential(pax.Linear(2, 2), jax.nn.relu)
    with self.assertRaisesRegex(ValueError, "no attribute `foo`"):
      net[0].replace(foo=1)
    new = net.replace_node(net[0].weight, jnp.zeros((2, 3)))
    self.assertEqual(new[0].weight.shape, (2, 3))
    self.assertEqual(net[0].weight.shape, (2, 2))
    seen = []
    net.apply(lambda m: seen.append(type(m).__name__) or m)
    self.assertEqual(seen, ["Linear", "Lambda", "Sequential"])

  def test_jit_keeps_layouts_apart(self):
    # Static values are the treedef's aux data (the module's `Layout`): jit's
    # caches must return each call with its own static values, also where
    # values are equal but of different types (1, 1.0 and True).
    class Scaled(pax.Module):

      def __init__(self, k):
        super().__init__()
        self.k = k
        self.w = jnp.ones(1)

    # Every `Scaled` layout has the same hash (that of its shape): each call
    # looks its layout up among all those cached before it, by equality.
    # (Each new layout is a compilation, ~35 ms of CPU.)
    identity = jax.jit(lambda m: m)
    wrong = [k for k in range(100) if identity(Scaled(k)).k != k]
    self.assertEqual(wrong, [])
    for k in (1, 1.0, True, 0, False, 0.0):
      out = identity(Scaled(k)).k
      self.assertEqual((type(out), out), (type(k), k))

  def test_train_eval(self):
    net = pax.Sequential(pax.Linear(2, 2), jax.nn.relu)
    ev = net.eval()
    self.assertFalse(ev.training)
    self.assertFalse(ev[0].training)
    self.assertTrue(net[0].training)
    self.assertTrue(pax.enable_train_mode(ev)[0].training)
    self.assertNotEqual(jax.tree_util.tree_structure(net),
                        jax.tree_util.tree_structure(ev))

  def test_assert_structure_equal(self):
    a = pax.Linear(2, 2)
    pax.assert_structure_equal(a, pax.Linear(2, 2))
    with self.assertRaisesRegex(
        ValueError, r"Structures differ: the static value `\.out_dim` is 2 in "
        "the first tree and 3 in the second"):
      pax.assert_structure_equal(a, pax.Linear(2, 3))
    with self.assertRaisesRegex(
        ValueError, r"the static value `\._training` is True in the first "
        "tree and False in the second"):
      pax.assert_structure_equal(a, a.eval())
    with self.assertRaisesRegex(
        ValueError, r"`\.layers\[1\]\.func` is .*relu.* in the first tree "
        ".*tanh.* in the second"):
      pax.assert_structure_equal(
          pax.Sequential(a, jax.nn.relu), pax.Sequential(a, jax.nn.tanh))
    with self.assertRaisesRegex(
        ValueError, r"the second tree has an extra leaf at `\.bias`"):
      pax.assert_structure_equal(pax.Linear(2, 2, with_bias=False), a)

  @parameterized.parameters("jit", "grad", "vmap", "scan")
  def test_crosses_jax_transforms(self, transform):
    net = pax.Sequential(pax.Linear(3, 4), jax.nn.relu, pax.Linear(4, 2))
    x = jnp.ones((5, 3))
    expected = net(x)
    if transform == "jit":
      out = jax.jit(lambda m, x: m(x))(net, x)
      np.testing.assert_allclose(out, expected, rtol=1e-6)
    elif transform == "grad":
      g = jax.grad(lambda m: jnp.sum(m(x)))(net)
      self.assertIsInstance(g, pax.Sequential)
      pax.assert_structure_equal(g, net)
      h = jax.grad(lambda p: jnp.sum(net.update_parameters(p)(x)))(
          net.parameters())
      chex.assert_trees_all_close(g, h, rtol=1e-6)
    elif transform == "vmap":
      out = jax.vmap(lambda m, x: m(x), in_axes=(None, 0))(net, x)
      np.testing.assert_allclose(out, expected, rtol=1e-6)
      stacked = jax.tree_util.tree_map(lambda a: jnp.stack([a, a]), net)
      out = jax.vmap(lambda m: m(x))(stacked)
      np.testing.assert_allclose(out[1], expected, rtol=1e-6)
    else:
      def body(m, xt):
        m, y = pax.purecall(m, xt)
        return m, y
      carry, ys = jax.lax.scan(body, Counter(), jnp.arange(4.0))
      self.assertEqual(int(carry.count), 4)
      np.testing.assert_allclose(ys, jnp.arange(4.0))

  def test_summary(self):
    net = pax.Sequential(pax.Linear(2, 3), jax.nn.relu, pax.Linear(3, 4))
    text = net.summary()
    self.assertIn("Total: 25 parameters", text)
    self.assertIn("weight (2, 3)", text)

  def test_pickle_and_deepcopy(self):
    net = pax.Sequential(pax.Linear(2, 3), relu, pax.Linear(3, 1))
    x = jnp.ones((4, 2))
    for other in (pickle.loads(pickle.dumps(net)), copy.deepcopy(net)):
      self.assertIs(type(other[0]), type(net[0]))
      pax.assert_structure_equal(other, net)
      np.testing.assert_array_equal(other(x), net(x))

  def test_seed_rng_is_deterministic(self):
    pax.seed_rng_key(7)
    a = pax.Linear(3, 3)
    pax.seed_rng_key(7)
    b = pax.Linear(3, 3)
    np.testing.assert_array_equal(a.weight, b.weight)
    with self.assertRaisesRegex(TypeError, "seed_rng_key expects"):
      pax.seed_rng_key("7")

  def test_host_made_keys_equal_jax_prng_keys(self):
    """The library's keys (made on the host) are jax.random.PRNGKey's."""
    for seed in (0, 1, 7, 2**16 + 3, 2**31 - 2, 2**31 - 1):
      want = jax.random.PRNGKey(seed)
      got = context.prng_key(seed)
      self.assertEqual((got.dtype, got.shape), (want.dtype, want.shape))
      np.testing.assert_array_equal(got, want, err_msg=str(seed))
      self.assertEqual(got.committed, want.committed)
    # Outside the range: JAX's own.
    np.testing.assert_array_equal(context.prng_key(2**40),
                                  jax.random.PRNGKey(2**40))
    pax.seed_rng_key(3)
    key = context.next_rng_key()
    pax.seed_rng_key(3)
    np.testing.assert_array_equal(
        key, jax.random.PRNGKey(context._STATE.rng.randint(0, 2**31 - 1)))


if __name__ == "__main__":
  quick_exit.main()
