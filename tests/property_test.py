"""Property tests: random module trees survive every round trip unchanged.

Hypothesis draws random nested `pax.Module` trees: attributes that are small
arrays (float32/int32), nested lists/dicts of arrays, submodules (random
trees or `pax.Linear` layers), lists mixing arrays and submodules, and static
ints/strings; some attribute names are trainable (`parameters_method`), the
others are state. Every tree must survive pytree flatten/unflatten,
`parameters()`/`update_parameters` (module and Haiku-dict forms),
`pax.save`/`pax.load` and, for callable trees, `to_haiku`/`from_haiku`, with
the same structure, dtypes and bits. 1000 examples in all, derandomized.
"""

import os
import tempfile

from absl.testing import absltest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np

import pax_haiku as pax
import quick_exit  # tests/quick_exit.py, beside this file

_SETTINGS = dict(derandomize=True, deadline=None, database=None,
                 print_blob=True)
_FIELDS = tuple(f"a_{i}" for i in range(6))


class Node(pax.Module):
  """A module holding whatever attributes it is given; a_0..a_2 train."""

  parameters = pax.parameters_method("a_0 a_1 a_2")

  def __init__(self, attrs):
    super().__init__()
    for name, value in attrs.items():
      setattr(self, name, value)


class CallNode(Node):
  """A callable tree: scales its input by the sum of all its leaves."""

  def __call__(self, x):
    total = sum((jnp.sum(leaf.astype(jnp.float32))
                 for leaf in jax.tree_util.tree_leaves(self)),
                jnp.zeros((), jnp.float32))
    return x * total


# Values of the drawn arrays: windows into two fixed random blocks (one
# RandomState per array would cost more than the array).
_FLOATS = np.random.RandomState(0).standard_normal(2**16 + 9).astype(
    np.float32)
_INTS = np.random.RandomState(1).randint(-5, 5, size=2**16 + 9).astype(
    np.int32)


def _array(shape, dtype, seed):
  values = _INTS if dtype == "int32" else _FLOATS
  return jnp.asarray(values[seed:seed + int(np.prod(shape))].reshape(shape))


arrays = st.builds(_array, shape=st.lists(st.integers(1, 3), max_size=2),
                   dtype=st.sampled_from(["float32", "int32"]),
                   seed=st.integers(0, 2**16))
# Dict keys are letters, list indices digits: leaf names never collide.
containers = st.recursive(
    arrays,
    lambda inner: st.one_of(
        st.lists(inner, min_size=1, max_size=3),
        st.dictionaries(st.sampled_from("kmpq"), inner, min_size=1,
                        max_size=3)),
    max_leaves=5)
_LINEARS = {}


def _linear(in_dim, out_dim, with_bias, seed):
  """A `pax.Linear`, initialized once per configuration.

  Each initialization runs Haiku's initializers (~10 ms); a configuration
  drawn again gets a copy of the first layer with copies of its arrays (a
  tree may hold a module or an array only once), so trees hold both freshly
  built and unflattened layers.
  """
  key = (in_dim, out_dim, with_bias, seed)
  if key not in _LINEARS:
    _LINEARS[key] = pax.Linear(in_dim, out_dim, with_bias=with_bias,
                               rng_key=jax.random.PRNGKey(seed))
    return _LINEARS[key]
  return jax.tree_util.tree_map(jnp.copy, _LINEARS[key])


linears = st.builds(_linear, st.integers(1, 3), st.integers(1, 3),
                    st.booleans(), st.integers(0, 3))
statics = st.one_of(st.integers(-3, 3), st.sampled_from(["relu", "", "x y"]))


def _trees(cls):
  def node(values):
    return st.builds(cls, st.dictionaries(st.sampled_from(_FIELDS), values,
                                          max_size=4))

  leaf_values = st.one_of(arrays, containers, statics)
  return st.recursive(
      node(st.one_of(leaf_values, linears)),
      lambda sub: node(st.one_of(
          leaf_values, linears, sub,
          st.lists(st.one_of(sub, linears, arrays), min_size=1,
                   max_size=2))),
      max_leaves=4)


trees = _trees(Node)
callable_trees = _trees(CallNode)


def assert_identical(test, a, b):
  """Same treedef (classes, fields, static values) and bit-equal leaves."""
  a_leaves, a_def = jax.tree_util.tree_flatten(a)
  b_leaves, b_def = jax.tree_util.tree_flatten(b)
  test.assertEqual(a_def, b_def)
  for x, y in zip(a_leaves, b_leaves):
    test.assertEqual(jnp.result_type(x), jnp.result_type(y))
    test.assertEqual(np.shape(x), np.shape(y))
    test.assertEqual(np.asarray(x).tobytes(), np.asarray(y).tobytes())


# A jitted identity: each new tree structure is a compilation (~35 ms of
# CPU), so test_flatten_unflatten passes all its examples through it in one
# call (a list of trees: jit flattens and rebuilds each tree as it would
# alone).
_JIT_IDENTITY = jax.jit(lambda m: m)


def _plus_one(tree):
  return jax.tree_util.tree_map(lambda x: x + jnp.ones((), x.dtype), tree)


class PropertyTest(absltest.TestCase):

  def test_flatten_unflatten(self):
    examples = []

    @settings(max_examples=300, **_SETTINGS)
    @given(trees)
    def check(module):
      leaves, treedef = jax.tree_util.tree_flatten(module)
      again = treedef.unflatten(leaves)
      self.assertIs(pax.module_class(again), pax.module_class(module))
      self.assertEqual(again, module)  # PAX equality: structure + identity.
      self.assertEqual(hash(again), hash(module))
      self.assertEqual(jax.tree_util.tree_structure(again), treedef)
      for x, y in zip(jax.tree_util.tree_leaves(again), leaves):
        self.assertIs(x, y)
      assert_identical(self, module.copy(), module)
      examples.append(module)

    check()  # pylint: disable=no-value-for-parameter
    self.assertGreaterEqual(len(examples), 300)
    for module, through_jit in zip(examples, _JIT_IDENTITY(examples),
                                   strict=True):
      with self.subTest(module=repr(module)):
        assert_identical(self, through_jit, module)

  @settings(max_examples=300, **_SETTINGS)
  @given(trees)
  def test_parameters_round_trip(self, module):
    params = module.parameters()
    assert_identical(self, module.update_parameters(params), module)
    # New values land exactly on the trainable leaves; state is untouched.
    new = module.update_parameters(_plus_one(params))
    assert_identical(self, new.parameters(), _plus_one(params))
    self.assertEqual(jax.tree_util.tree_structure(new.state),
                     jax.tree_util.tree_structure(module.state))
    for x, y in zip(jax.tree_util.tree_leaves(new.state),
                    jax.tree_util.tree_leaves(module.state)):
      self.assertIs(x, y)
    # The Haiku-dict form agrees with the module form.
    from_dict = module.update_parameters(_plus_one(module.params))
    assert_identical(self, from_dict, new)
    self.assertEqual(
        len(jax.tree_util.tree_leaves(module.params)) +
        len(jax.tree_util.tree_leaves(module.state)),
        len(jax.tree_util.tree_leaves(module)))

  @settings(max_examples=200, **_SETTINGS)
  @given(trees)
  def test_save_load(self, module):
    path = os.path.join(self.tmp, "module.npz")
    pax.save(path, module)
    zeros = jax.tree_util.tree_map(jnp.zeros_like, module)
    loaded = pax.load(path, zeros)
    assert_identical(self, loaded, module)
    params, state = pax.load_haiku(path)
    assert_identical(self, params, module.params)
    assert_identical(self, state, module.state)

  @settings(max_examples=200, **_SETTINGS)
  @given(callable_trees, st.integers(1, 3))
  def test_to_haiku_from_haiku(self, module, batch):
    x = jnp.arange(batch * 2, dtype=jnp.float32).reshape(batch, 2)
    transformed = pax.to_haiku(module)
    params, state = transformed.init(None, x)
    assert_identical(self, params, module.params)
    assert_identical(self, state, module.state)
    y, new_state = transformed.apply(params, state, None, x)
    expected = module(x)
    assert_identical(self, y, expected)
    assert_identical(self, new_state, module.state)
    back = pax.from_haiku(transformed)(x)
    assert_identical(self, back.params, module.params)
    assert_identical(self, back.state, module.state)
    assert_identical(self, back(x), expected)

  def setUp(self):
    super().setUp()
    self.tmp = tempfile.mkdtemp(dir=absltest.get_default_test_tmpdir())


if __name__ == "__main__":
  quick_exit.main()
