"""Mixed precision: parameters stay float32, compute runs in the policy's dtype."""

import pickle

from absl.testing import parameterized
import chex
import haiku as hk
import jax
from jax.extend import core as jex_core
import jax.numpy as jnp
import jmp
import numpy as np

import pax_haiku as pax
import quick_exit  # tests/quick_exit.py, beside this file

F32, BF16 = jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16)
HALF = jmp.get_policy("params=float32,compute=bfloat16,output=float32")
HALF_OUT = jmp.get_policy("params=float32,compute=bfloat16,output=bfloat16")


def _x(*shape):
  return jnp.asarray(np.random.RandomState(0).normal(size=shape), jnp.float32)


def _eqns(jaxpr):
  for eqn in jaxpr.eqns:
    yield eqn
    for sub in jex_core.jaxprs_in_params(eqn.params):
      yield from _eqns(sub)


def _dtypes(fn, *args, primitive):
  """Input dtypes of every `primitive` equation in the jaxpr of `fn`."""
  jaxpr = jax.make_jaxpr(fn)(*args).jaxpr
  return [tuple(jnp.dtype(v.aval.dtype) for v in eqn.invars)
          for eqn in _eqns(jaxpr) if eqn.primitive.name == primitive]


def _bn_mlp(x, is_training):
  """A Haiku net with an inner norm (its own inner policy under the default)."""
  return hk.Linear(2)(hk.BatchNorm(True, True, 0.9)(x, is_training))


def _param_dtypes(module):
  return {jnp.dtype(x.dtype) for x in jax.tree_util.tree_leaves(
      module.params)}


class ApplyPolicyTest(parameterized.TestCase):

  def test_linear_computes_in_half_keeps_float32_params(self):
    net = pax.apply_mp_policy(pax.Linear(3, 4), HALF_OUT)
    x = _x(2, 3)
    self.assertEqual(_param_dtypes(net), {F32})
    self.assertEqual(_dtypes(lambda m, x: m(x), net, x,
                             primitive="dot_general"), [(BF16, BF16)])
    y = net(x)
    self.assertEqual(y.dtype, BF16)
    # Exactly Haiku's own mixed precision for hk.Linear.
    with hk.mixed_precision.push_policy(hk.Linear, HALF_OUT):
      ref = hk.transform(lambda x: hk.Linear(4)(x)).apply(net.params, None, x)
    chex.assert_trees_all_equal(y, ref)

  def test_policy_string_and_gradients_are_float32(self):
    net = pax.apply_mp_policy(pax.Conv1D(3, 4, 3),
                              "params=float32,compute=bfloat16,output=float32")
    x = _x(2, 5, 3)
    self.assertEqual(_dtypes(lambda m, x: m(x), net, x,
                             primitive="conv_general_dilated"),
                     [(BF16, BF16)])
    # Dtypes only: traced, not run (an eager grad compiles every primitive).
    grads = jax.eval_shape(
        jax.grad(lambda p: jnp.sum(net.update_parameters(p)(x))),
        net.parameters())
    self.assertEqual({jnp.dtype(g.dtype) for g in jax.tree_util.tree_leaves(
        grads)}, {F32})

  def test_batch_norm_state_stays_float32_and_jit(self):
    bn = pax.apply_mp_policy(pax.BatchNorm2D(3), HALF)
    x = _x(2, 4, 4, 3)
    new_bn, y = jax.jit(pax.purecall)(bn, x)
    self.assertEqual(y.dtype, F32)
    self.assertEqual({jnp.dtype(s.dtype) for s in jax.tree_util.tree_leaves(
        new_bn.state) if jnp.issubdtype(s.dtype, jnp.floating)}, {F32})
    self.assertEqual(_param_dtypes(new_bn), {F32})
    self.assertEqual(pax.get_mp_policy(new_bn), HALF)

  def test_non_haiku_module_casts_its_own_arrays(self):

    class Scale(pax.Module):

      def __init__(self):
        super().__init__()
        self.w = jnp.ones((3,))
        self.calls = jnp.zeros((), jnp.float32)

      def __call__(self, x):
        self.calls = self.calls + 1
        return x * self.w, self.w.dtype

    net = pax.apply_mp_policy(Scale(), HALF_OUT)
    net, (y, w_dtype) = pax.purecall(net, _x(2, 3))
    self.assertEqual(w_dtype, BF16)  # Inside the call.
    self.assertEqual(y.dtype, BF16)
    self.assertEqual(net.w.dtype, F32)  # Stored.
    self.assertEqual(net.calls.dtype, F32)
    self.assertEqual(float(net.calls), 1.0)
    self.assertEqual(pax.module_class(net).__name__, "Scale")
    plain = pax.unwrap_mp_policy(net)
    self.assertIsNone(pax.get_mp_policy(plain))
    self.assertEqual(pax.purecall(plain, _x(2, 3))[1][1], F32)

  def test_unwrap_and_errors(self):
    fc = pax.Linear(3, 4)
    net = pax.apply_mp_policy(fc, HALF)
    plain = pax.unwrap_mp_policy(net)
    self.assertEqual(jax.tree_util.tree_structure(plain),
                     jax.tree_util.tree_structure(fc))
    chex.assert_trees_all_equal(plain(_x(2, 3)), fc(_x(2, 3)))
    with self.assertRaisesRegex(ValueError, "unwrap_mp_policy"):
      pax.apply_mp_policy(net, HALF)
    with self.assertRaisesRegex(ValueError, "no mixed precision policy"):
      pax.unwrap_mp_policy(fc)
    with self.assertRaisesRegex(TypeError, "jmp.Policy"):
      pax.apply_mp_policy(fc, jnp.bfloat16)
    with self.assertRaisesRegex(ValueError, "policy"):
      pax.apply_mp_policy(fc, "params=float32,compute=nonsense")
    with self.assertRaisesRegex(TypeError, "pax.Module"):
      pax.apply_mp_policy(lambda x: x, HALF)

  def test_same_policy_same_treedef(self):
    a = pax.apply_mp_policy(pax.Linear(3, 4), HALF)
    b = pax.apply_mp_policy(pax.Linear(3, 4), HALF)
    self.assertEqual(jax.tree_util.tree_structure(a),
                     jax.tree_util.tree_structure(b))

  def test_pickle_keeps_the_policy(self):
    for net in (pax.apply_mp_policy(pax.Linear(3, 4), HALF_OUT),
                pax.apply_mp_policy(pax.from_haiku(hk.Linear, 4)(_x(2, 3)),
                                    HALF_OUT),
                pax.apply_default_mp_policy(pax.from_haiku(_bn_mlp)(_x(2, 3)))):
      back = pickle.loads(pickle.dumps(net))
      self.assertEqual(pax.get_mp_policy(back), pax.get_mp_policy(net))
      self.assertEqual(jax.tree_util.tree_structure(back),
                       jax.tree_util.tree_structure(net))
      _, y = pax.purecall(net, _x(2, 3))
      _, y_back = pax.purecall(back, _x(2, 3))
      self.assertEqual(y_back.dtype, y.dtype)
      np.testing.assert_array_equal(y_back, y)

  def test_to_haiku_keeps_the_policy(self):
    net = pax.apply_mp_policy(pax.Linear(3, 4), HALF_OUT)
    f = pax.to_haiku(net)
    params, state = f.init(None, _x(2, 3))
    y, _ = f.apply(params, state, None, _x(2, 3))
    self.assertEqual(y.dtype, BF16)
    self.assertEqual(_param_dtypes(net), {F32})


class DefaultPolicyTest(parameterized.TestCase):

  def test_matmuls_half_norms_full(self):
    net = pax.Sequential(pax.Conv2D(3, 4, 3), pax.BatchNorm2D(4),
                         jax.nn.relu, pax.Conv2D(4, 4, 3), pax.LayerNorm(4))
    net = pax.apply_default_mp_policy(net).eval()
    x = _x(2, 5, 5, 3)
    fn = lambda m, x: m(x)  # pylint: disable=unnecessary-lambda-assignment
    self.assertEqual(_dtypes(fn, net, x, primitive="conv_general_dilated"),
                     [(BF16, BF16)] * 2)
    # Both norms normalize in float32.
    self.assertEqual(_dtypes(fn, net, x, primitive="rsqrt"), [(F32,)] * 2)
    self.assertEqual(_param_dtypes(net), {F32})
    self.assertEqual(jax.eval_shape(net, x).dtype, F32)
    self.assertEqual(pax.get_mp_policy(net[0]).compute_dtype, BF16)
    self.assertEqual(pax.get_mp_policy(net[1]).compute_dtype, F32)
    self.assertIsNone(pax.get_mp_policy(net[2]))  # No parameters.
    cleared = pax.unwrap_mp_policy(net, recursive=True)
    self.assertTrue(all(pax.get_mp_policy(l) is None for l in cleared))

  def test_haiku_net_keeps_inner_norms_in_float32(self):
    net = pax.nets.Transformer(8, num_heads=2, num_layers=1)
    h = _x(1, 3, 8)
    mp_net = pax.apply_default_mp_policy(net, jnp.float16)
    fn = lambda m, h: m(h)  # pylint: disable=unnecessary-lambda-assignment
    f16 = jnp.dtype(jnp.float16)
    dots = _dtypes(fn, mp_net, h, primitive="dot_general")
    self.assertLen(dots, 8)  # q, k, v, logits, weights @ v, out, mlp x2.
    self.assertTrue(all(d == (f16, f16) for d in dots), dots)
    # The LayerNorms (2 per block + the final one) compute in float32.
    self.assertEqual(_dtypes(fn, mp_net, h, primitive="rsqrt"), [(F32,)] * 3)
    self.assertEqual(_param_dtypes(mp_net), {F32})
    y = mp_net(h)
    self.assertEqual(y.dtype, F32)
    np.testing.assert_allclose(y, net(h), atol=0.05, rtol=0.05)
    # The same as Haiku's own policies on the plain Haiku module.
    half, _, inner_norm = pax.default_policies(jnp.float16)
    cls = pax.nets.haiku_transformer.Transformer
    f = hk.transform(lambda h: cls(2, 1)(h, is_training=False))
    with hk.mixed_precision.push_policy(cls, half), \
        hk.mixed_precision.push_policy(hk.LayerNorm, inner_norm):
      ref = f.apply(net.params, None, h)
    chex.assert_trees_all_equal(y, ref)

  def test_bad_half_dtype(self):
    with self.assertRaisesRegex(ValueError, "half_dtype"):
      pax.apply_default_mp_policy(pax.Linear(2, 2), jnp.int8)


if __name__ == "__main__":
  quick_exit.main()
