"""A module's type is its class; nothing grows with static values; every
module kind pickles and deepcopies with an equal round trip."""

import copy
import functools
import gc
import importlib
import pickle
import tracemalloc

from absl.testing import absltest
from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

import pax_haiku as pax
from pax_haiku._src import module_layout
import module_zoo  # tests/module_zoo.py, beside this file
import quick_exit  # tests/quick_exit.py, beside this file


def _subclass_count() -> int:
  seen, todo = set(), [pax.Module]
  while todo:
    for sub in todo.pop().__subclasses__():
      if sub not in seen:
        seen.add(sub)
        todo.append(sub)
  return len(seen)


def _leaves(tree):
  return [np.asarray(jax.random.key_data(x)) if jax.dtypes.issubdtype(
      x.dtype, jax.dtypes.prng_key) else np.asarray(x)
          for x in jax.tree_util.tree_leaves(tree)]


def _assert_same_module(test, a, b):
  test.assertIs(type(a), type(b))
  pax.assert_structure_equal(a, b)
  for x, y in zip(_leaves(a), _leaves(b), strict=True):
    np.testing.assert_array_equal(x, y)
  test.assertEqual(repr(a), repr(b))


class _Static(pax.Module):

  def __init__(self, k):
    super().__init__()
    self.k = k


_ZOO = [(name, name) for name in module_zoo.ZOO]


@functools.lru_cache(maxsize=None)
def _built(name):
  """Each zoo module is built once (modules are immutable: sharing is safe)."""
  return module_zoo.ZOO[name][0]()


class IdentityTest(parameterized.TestCase):

  def test_zoo_covers_every_public_module_class(self):
    names = set(module_zoo.ZOO) | set(module_zoo.COVERED_BY)
    missing = [n for n, _ in module_zoo.public_module_classes()
               if n not in names]
    self.assertEqual(missing, [], "Public module classes missing from "
                     "tests/module_zoo.py (add a ZOO entry).")

  @parameterized.named_parameters(*_ZOO)
  def test_type_is_an_importable_class(self, name):
    module = _built(name)
    cls = type(module)
    home = importlib.import_module(cls.__module__)
    self.assertIs(getattr(home, cls.__qualname__), cls)
    self.assertIs(module.__class__, cls)

  def test_type_is_the_public_class(self):
    checks = [(pax.Linear(2, 3), pax.Linear),
              (pax.Sequential(pax.Linear(2, 2)), pax.Sequential),
              (pax.from_haiku(module_zoo.haiku_mlp)(jnp.ones((1, 2))),
               pax.HaikuModule),
              (pax.from_optax(optax.sgd(0.1))(pax.Linear(2, 2).parameters()),
               pax.Optimizer),
              (pax.apply_mp_policy(pax.Linear(2, 2), "p=f32,c=f16,o=f32"),
               pax.Linear),
              (pax.nets.MLP(2, [3]), pax.nets.MLP)]
    for module, cls in checks:
      self.assertIs(type(module), cls)
      leaves, treedef = jax.tree_util.tree_flatten(module)
      self.assertIs(type(treedef.unflatten(leaves)), cls)
    # The class builds new instances with its own constructor.
    self.assertEqual(type(pax.Linear(2, 3))(4, 5).weight.shape, (4, 5))

  @parameterized.named_parameters(*_ZOO)
  def test_pickle_and_deepcopy_round_trip(self, name):
    inputs = module_zoo.ZOO[name][1]
    module = _built(name)
    if isinstance(module, pax.Optimizer):
      with self.assertRaisesRegex(TypeError, r"pax\.save"):
        pickle.dumps(module)
      copies = [copy.deepcopy(module), copy.copy(module)]
    else:
      copies = [pickle.loads(pickle.dumps(module)), copy.deepcopy(module),
                copy.copy(module)]
    for again in copies:
      _assert_same_module(self, again, module)
      if inputs is not None:
        x = inputs()
        new_a, out_a = pax.purecall(module, *x)
        new_b, out_b = pax.purecall(again, *x)
        chex.assert_trees_all_equal(out_a, out_b)
        _assert_same_module(self, new_b, new_a)

  def test_optimizer_state_survives_save_and_load(self):
    net = pax.Linear(2, 2)
    tx = optax.adam(1e-2)
    opt = pax.from_optax(tx)(net.parameters())
    grads = jax.tree_util.tree_map(jnp.ones_like, net.parameters())
    net, opt = opt.step(net, grads)
    path = self.create_tempfile("opt.npz").full_path
    pax.save(path, opt)
    loaded = pax.load(path, pax.from_optax(tx)(net.parameters()))
    _assert_same_module(self, loaded, opt)

  def test_static_values_register_no_classes(self):
    before = _subclass_count()
    modules = [_Static(i) for i in range(10_000)]
    # Shapes only (`eval_shape`): what is registered does not depend on
    # whether the arrays are computed. 30 layer shapes (each traces Haiku's
    # init, ~50 ms here) are 6 times the allowed growth below.
    linears = [jax.eval_shape(lambda i=i: pax.Linear(4, i))
               for i in range(1, 31)]
    self.assertLessEqual(_subclass_count() - before, 5)
    self.assertEqual({type(m) for m in modules}, {_Static})
    self.assertEqual({type(m) for m in linears}, {pax.Linear})
    # Each keeps its own static value through a pytree round trip.
    for m in modules[::997] + linears[::7]:
      leaves, treedef = jax.tree_util.tree_flatten(m)
      again = treedef.unflatten(leaves)
      self.assertEqual(vars(again), vars(m))
    self.assertEqual([m.out_dim for m in linears[::7]], list(range(1, 31, 7)))

  def test_memory_per_instance_is_small(self):
    w = jnp.zeros(3)
    keep = [_Static(i).replace(k=i) for i in range(1000)]
    gc.collect()
    tracemalloc.start()
    try:
      start = tracemalloc.take_snapshot()
      # 2,000 instances: ~420 bytes each, against a few kB that the
      # snapshots themselves add (tracemalloc makes every allocation slow).
      keep += [_Static(i) for i in range(1000, 3000)]
      gc.collect()
      end = tracemalloc.take_snapshot()
    finally:
      tracemalloc.stop()
    grown = sum(s.size_diff for s in end.compare_to(start, "filename"))
    del w
    self.assertLessEqual(grown / 2, 1_000_000,
                         f"{grown / 2:.0f} bytes per 1,000 instances")

  def test_shapes_are_not_kept_after_their_modules(self):
    class Temporary(pax.Module):

      def __init__(self, names):
        super().__init__()
        for n in names:
          setattr(self, n, jnp.zeros(1))

    before = len(module_layout._SHAPES)  # pylint: disable=protected-access
    modules = [Temporary([f"a{i}"]) for i in range(200)]
    self.assertGreaterEqual(
        len(module_layout._SHAPES) - before, 200)  # pylint: disable=protected-access
    del modules
    gc.collect()
    self.assertLessEqual(
        len(module_layout._SHAPES) - before, 5)  # pylint: disable=protected-access


class LazyFieldsTest(absltest.TestCase):
  """An unflattened module fills its fields on first access."""

  def test_unflattened_fields_and_class_attributes(self):
    m = pax.Linear(3, 4)
    leaves, treedef = jax.tree_util.tree_flatten(m)
    copy_ = treedef.unflatten(leaves)
    self.assertIs(copy_.weight, m.weight)
    self.assertEqual(copy_.out_dim, 4)
    # The per-field descriptors are invisible on the class.
    self.assertFalse(hasattr(pax.Linear, "weight"))
    self.assertEqual(getattr(pax.Linear, "out_dim", "absent"), "absent")
    with self.assertRaisesRegex(AttributeError,
                                "'Linear' object has no attribute 'nope'"):
      treedef.unflatten(leaves).nope  # pylint: disable=expression-not-assigned

  def test_class_attribute_named_like_a_field(self):

    class Scaled(pax.Module):
      scale = 1.0

      def __init__(self):
        super().__init__()
        self.scale = 2.0
        self.w = jnp.ones(2)

    leaves, treedef = jax.tree_util.tree_flatten(Scaled())
    self.assertEqual(treedef.unflatten(leaves).scale, 2.0)
    self.assertEqual(Scaled.scale, 1.0)

  def test_flatten_while_constructing(self):
    seen = []

    class Growing(pax.Module):

      def __init__(self):
        super().__init__()
        self.a = jnp.zeros(1)
        seen.append(len(jax.tree_util.tree_leaves(self)))
        self.k = 3
        self.b = jnp.zeros(2)
        seen.append(len(jax.tree_util.tree_leaves(self)))
        seen.append(jax.tree_util.tree_structure(self) ==
                    jax.tree_util.tree_structure(self))

    m = Growing()
    self.assertEqual(seen, [1, 2, True])
    self.assertEqual(m.pytree_attributes, ("a", "b"))
    leaves, treedef = jax.tree_util.tree_flatten(m)
    self.assertEqual(treedef.unflatten(leaves).k, 3)


if __name__ == "__main__":
  quick_exit.main()
