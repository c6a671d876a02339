"""PAX 0.5.10 API on pax_haiku: module kinds, methods, graph, experimental.

Behaviour pinned here was checked against real PAX 0.5.9 where PAX runs
(jax 0.4.30); see tools/pax_compat/run.sh for PAX's own suite.
"""

import copy
import dataclasses

from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

import pax_haiku as pax
import quick_exit  # tests/quick_exit.py, beside this file

G = pax.experimental.graph


class _Counter(pax.StateModule):

  def __init__(self):
    super().__init__()
    self.count = jnp.array(0)

  @pax.module_and_value
  def step(self):
    self.count += 1
    return self.count


class _Scale(pax.ParameterModule):

  def __init__(self):
    super().__init__()
    self.s = jnp.ones(3)
    self.counter = _Counter()


class ModuleKindsTest(parameterized.TestCase):

  def test_parameter_module_own_arrays_trainable_submodules_keep_kind(self):
    m = _Scale()
    leaves = jax.tree_util.tree_leaves(m.parameters())
    self.assertLen(leaves, 1)
    self.assertIs(leaves[0], m.s)

  def test_state_module_has_no_own_parameters(self):
    self.assertEqual(jax.tree_util.tree_leaves(_Counter().parameters()), [])

  def test_module_and_value_decorates_methods(self):
    c, v = _Counter().step()
    self.assertEqual((int(c.count), int(v)), (1, 1))

  def test_empty_node_is_pytree_data(self):
    class Att(pax.Module):
      def __init__(self):
        super().__init__()
        self.hidden = pax.EmptyNode()

    att = Att()
    self.assertEqual(att.pytree_attributes, ("hidden",))
    self.assertEqual(att.hidden, pax.EmptyNode())
    self.assertEqual(jax.tree_util.tree_leaves(att), [])

  def test_mixed_attribute_round_trips(self):
    class Mix(pax.Module):
      def __init__(self):
        super().__init__()
        self.f = [pax.Linear(2, 2), 0, jax.nn.relu]

    m = jax.jit(lambda x: x)(Mix())
    self.assertEqual(m.f[1:], [0, jax.nn.relu])
    sd = m.state_dict()
    self.assertIsNone(sd["f"][2])
    self.assertIs(m.load_state_dict(sd).f[2], jax.nn.relu)


class ModuleMethodsTest(parameterized.TestCase):

  def test_set_attribute_returns_a_copy(self):
    fc = pax.Linear(2, 2)
    fc2 = fc.set_attribute("extra", pax.Linear(2, 1))
    self.assertFalse(hasattr(fc, "extra"))
    self.assertIn("extra", fc2.pytree_attributes)
    with self.assertRaisesRegex(TypeError, "attribute name"):
      fc.set_attribute(1, 2)

  def test_scan_bugs_and_shared_weights(self):
    fc1 = pax.Linear(2, 3)
    fc2 = pax.Linear(2, 3).replace(weight=fc1.weight)
    with self.assertRaisesRegex(ValueError, "held by two modules"):
      pax.Sequential(fc1, fc2)
    net = pax.Sequential(pax.Linear(2, 2))
    self.assertIs(net.scan_bugs(), net)

  def test_class_attribute_error_at_instantiation(self):
    class M(pax.Module):
      a = pax.Linear(3, 3)

    with self.assertRaisesRegex(ValueError, "Class attribute `M.a`"):
      M()

  def test_slots_error_at_instantiation(self):
    class M(pax.Module):
      __slots__ = ()

    with self.assertRaisesRegex(ValueError, "__slots__"):
      M()

  def test_dataclass_module(self):
    @dataclasses.dataclass
    class M(pax.Module):
      core: pax.Module

    m = M(pax.Linear(3, 3)).eval()
    self.assertFalse(m.core.training)
    self.assertEqual(M(pax.Linear(1, 1)).pytree_attributes, ("core",))

  def test_apply_submodules_skips_self(self):
    net = pax.Sequential(pax.Linear(1, 1)).eval()
    out = net.apply_submodules(lambda m: m.train())
    self.assertFalse(out.training)
    self.assertTrue(out[0].training)

  def test_mod_operator(self):
    fc, y = pax.Linear(2, 2) % jnp.ones((1, 2))
    self.assertEqual(y.shape, (1, 2))
    self.assertIs(type(fc), pax.Linear)

  def test_mp_policy_on_module_without_call(self):
    class M(pax.Module):
      def __init__(self):
        super().__init__()
        self.fc = pax.Linear(3, 3)

      def t(self, x):
        return x

    m = pax.apply_mp_policy(M(), "p=f32,c=f16,o=f16")
    self.assertTrue(hasattr(m, "_pax_mp_policy"))
    self.assertEqual(m.t(jnp.ones(2)).dtype, jnp.float32)
    self.assertFalse(hasattr(pax.unwrap_mp_policy(m), "_pax_mp_policy"))


  def test_unfreeze_with_origin_restores_what_was_trainable(self):
    frozen_inner = pax.freeze_parameters(pax.Linear(2, 2))
    net = pax.Sequential(frozen_inner, pax.Linear(2, 3))
    frozen = pax.freeze_parameters(net)
    self.assertEmpty(jax.tree_util.tree_leaves(frozen.parameters()))
    thawed = pax.unfreeze_parameters(frozen, origin=net)
    # As PAX: origin's structure, the frozen module's leaves.
    pax.assert_structure_equal(thawed, net)
    self.assertLen(jax.tree_util.tree_leaves(thawed.parameters()), 2)
    self.assertIs(thawed[1].weight, frozen[1].weight)
    # Without origin everything becomes trainable.
    self.assertLen(jax.tree_util.tree_leaves(
        pax.unfreeze_parameters(frozen).parameters()), 4)
    with self.assertRaisesRegex(ValueError, r"origin=model"):
      pax.unfreeze_parameters(frozen, origin=pax.Linear(3, 3))

  def test_summary_return_list(self):
    net = pax.Sequential(pax.Linear(2, 3), pax.Linear(3, 1))
    lines = net.summary(return_list=True)
    self.assertEqual(lines, net.summary().splitlines())
    self.assertTrue(lines[0].startswith("Sequential"))


class LazyAndGraphTest(parameterized.TestCase):

  def test_lazy_module(self):
    class M(pax.experimental.LazyModule):
      def __call__(self, x):
        return self.get_or_create("fc", lambda: pax.Linear(1, 2))(x)

    m, y = pax.purecall(M(), jnp.ones((3, 1)))
    self.assertEqual(y.shape, (3, 2))
    self.assertIn("fc", m.pytree_attributes)
    with self.assertRaisesRegex(TypeError, "create_fn"):
      pax.purecall(_BadLazy(), jnp.ones(1))

  def test_graph_nodes(self):
    x = G.InputNode(jnp.zeros((3, 3)))
    y = x >> pax.Linear(3, 4) >> jax.nn.relu
    self.assertEqual(y.shape, (3, 4))
    self.assertEqual(((x & y) & x).parents, (x, y, x))
    self.assertEqual((x | (y | y)).parents, (x, y, y))
    with self.assertRaises(TypeError):
      copy.copy(x)
    with self.assertRaises(TypeError):
      copy.deepcopy(x)

  def test_build_graph_module_runs_and_jits(self):
    def residual(x):
      y = x >> pax.Linear(3, 3) >> jax.nn.relu
      t = x >> pax.Linear(3, 3) >> jnp.tanh
      return (y | t) >> jnp.add

    x = jnp.ones((2, 3))
    net = G.build_graph_module(residual)(x)
    # Linear, relu, Linear, tanh, the `|` node's identity, add (as PAX).
    self.assertLen(net.modules, 6)
    np.testing.assert_allclose(jax.jit(lambda n, v: n(v))(net, x), net(x))

  def test_reused_module_is_an_error(self):
    def reuse(x):
      mod = pax.Linear(3, 3)
      return ((x >> mod >> jax.nn.relu) | (x >> mod)) >> jnp.add

    with self.assertRaisesRegex(ValueError, "reachable twice"):
      G.build_graph_module(reuse)(jnp.ones((1, 3)))

  def test_builder_must_return_a_node(self):
    with self.assertRaisesRegex(TypeError, "graph node"):
      G.build_graph_module(lambda x: 1)(jnp.ones(1))


class _BadLazy(pax.experimental.LazyModule):

  def __call__(self, x):
    return self.get_or_create("fc", 3)


if __name__ == "__main__":
  quick_exit.main()
