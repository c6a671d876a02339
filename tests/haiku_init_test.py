"""pax's fast Haiku `init` gives Haiku's own arrays.

haiku_init.py and the chunked random programs of chunked_random.py.
"""

import hashlib
import os
import subprocess
import sys

from absl.testing import parameterized
import chex
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

import pax_haiku as pax
from pax_haiku._src import chunked_random
from pax_haiku._src import haiku_init
import quick_exit  # tests/quick_exit.py, beside this file

I = hk.initializers
KEY = jax.random.PRNGKey(42)
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# Conv weights of shape (3, 3, 1, 2): fan_in 9 and fan_out 18 keep the
# VarianceScaling modes apart. Haiku's reference compiles one jax.random
# program per weight shape, and with XLA's default flags that costs ~0.4 s
# here against ~2.6 s for (3, 3, 4, 9).
_CONV_INPUT = (jnp.ones((1, 5, 5, 1)),)


def _conv(w_init, b_init=None):
  return lambda x: hk.Conv2D(2, 3, w_init=w_init, b_init=b_init)(x)


CASES = {
    # name: (Haiku function, sample inputs)
    "linear_default": (lambda x: hk.Linear(7)(x), (jnp.ones((2, 5)),)),
    # 700 * 300 > one chunk and not a multiple of it.
    "linear_many_chunks": (lambda x: hk.Linear(300)(x), (jnp.ones((1, 700)),)),
    "truncated_normal": (_conv(I.TruncatedNormal(0.3, 0.1),
                               I.RandomNormal(0.5, -1.0)), _CONV_INPUT),
    "truncated_bounds": (_conv(I.TruncatedNormal(1.0, lower=-1.0, upper=3.0)),
                         _CONV_INPUT),
    "uniform": (_conv(I.RandomUniform(-0.2, 0.7), I.Constant(0.25)),
                _CONV_INPUT),
    "variance_scaling": (_conv(I.VarianceScaling(2.0)), _CONV_INPUT),
    "variance_scaling_uniform": (
        _conv(I.VarianceScaling(1.0, "fan_avg", "uniform")), _CONV_INPUT),
    "variance_scaling_normal": (
        _conv(I.VarianceScaling(1.0, "fan_out", "normal")), _CONV_INPUT),
    "orthogonal": (_conv(I.Orthogonal()), _CONV_INPUT),
    "batch_norm": (lambda x: hk.BatchNorm(True, True, 0.9)(
        x, is_training=True), (jnp.arange(12.).reshape(3, 4),)),
    # Weight (6 + 2, 4 * 2) = (8, 8), as in "attention" (one random program
    # per weight shape).
    "lstm": (lambda x: hk.LSTM(2)(x, hk.LSTM(2).initial_state(2)),
             (jnp.ones((2, 6)),)),
    # (5, 7): linear_default's weight shape, whose per-shape random program
    # is compiled already.
    "embed": (lambda t: hk.Embed(5, 7)(t), (jnp.zeros((3,), jnp.int32),)),
    "layer_norm": (lambda x: hk.LayerNorm(-1, True, True)(x),
                   (jnp.ones((2, 5)),)),
    "attention": (lambda x: hk.MultiHeadAttention(2, 4, w_init_scale=1.0)(
        x, x, x), (jnp.ones((1, 3, 8)),)),
    "ema_set_state_only": (lambda x: hk.ExponentialMovingAverage(0.9)(x),
                           (jnp.arange(4.),)),
    "input_dependent_param": (
        lambda x: x * hk.get_parameter("p", x.shape, init=lambda s, d: x * 2),
        (jnp.arange(4.),)),
}


def _haiku_init(name, key=KEY):
  fn, args = CASES[name]
  return hk.transform_with_state(fn).init(key, *args)


def _fast_init(name, key=KEY):
  fn, args = CASES[name]
  return haiku_init.init(fn, key, args, {})


class InitTest(parameterized.TestCase):

  @parameterized.named_parameters((n, n) for n in CASES)
  def test_bit_identical_to_haiku_eager_init(self, name):
    got, want = _fast_init(name), _haiku_init(name)
    chex.assert_trees_all_equal_structs(got, want)
    chex.assert_trees_all_equal(got, want)

  def test_typed_key(self):
    key = jax.random.key(3)
    chex.assert_trees_all_equal(_fast_init("linear_default", key),
                                _haiku_init("linear_default", key))

  def test_rng_used_in_the_forward_pass(self):
    # The forward pass draws a key before the MLP's initializers run: the
    # key splits are run eagerly too, so their keys are Haiku's. (Weights of
    # shape (8, 8), as in the "attention" case: Haiku's reference compiles
    # one random program per shape.)
    def f(x):
      return hk.dropout(hk.next_rng_key(), 0.5, hk.nets.MLP([8, 8])(x))
    x = jnp.ones((2, 8))
    got = haiku_init.init(f, KEY, (x,), {})
    want = hk.transform_with_state(f).init(KEY, x)
    chex.assert_trees_all_equal_structs(got, want)
    chex.assert_trees_all_equal(got, want)

  def test_traced_inputs_use_haiku_init(self):
    fn, args = CASES["linear_default"]
    got = jax.jit(lambda k, x: haiku_init.init(fn, k, (x,), {}))(KEY, *args)
    chex.assert_trees_all_close(got, _haiku_init("linear_default"), rtol=1e-6)

  def test_one_random_program_for_every_shape(self):
    # Weights from 1 to 140,000 elements: XLA compiles one random program
    # per distribution, not one per shape, and the chunks give Haiku's
    # values. chunked_random.draw runs ceil(n / _CHUNK) chunks of
    # _CHUNK = 32,768 elements and cuts the last one at n; the sizes are its
    # cases: one element (one chunk, all but one of its values cut), exactly
    # one chunk (nothing cut) and 140,000 (four chunks and 8,928 elements of
    # a fifth: every chunk boundary below it is crossed, and the last chunk
    # is cut). ("linear_many_chunks" above is another cut multi-chunk case.)
    # Each size costs Haiku's reference a compile of its own (~1.2 s of CPU
    # at XLA's default flags).
    self.assertEqual(chunked_random._CHUNK, 32_768)  # pylint: disable=protected-access
    def build(n):
      return haiku_init.init(lambda x: hk.Linear(n)(x), KEY,
                             (jnp.ones((1, 1)),), {})

    build(3)
    compiles = []

    def listener(event, seconds, **kwargs):
      del seconds, kwargs
      if event == "/jax/core/compile/backend_compile_duration":
        compiles.append(event)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
      built = {n: build(n) for n in (1, 32_768, 140_000)}
    finally:
      jax.monitoring.unregister_event_duration_listener(listener)
    self.assertEqual(compiles, [])
    for n, got in built.items():
      want = hk.transform_with_state(lambda x, n=n: hk.Linear(n)(x)).init(
          KEY, jnp.ones((1, 1)))
      chex.assert_trees_all_equal(got, want)

  @parameterized.parameters("normal", "truncated_normal")
  def test_host_scaling_equals_haikus_two_programs(self, kind):
    # `_scale` computes `stddev * x + mean` with NumPy on the CPU backend;
    # it must give the bits of the two eager programs Haiku runs, including
    # XLA's flush of float32 denormals to signed zeros.
    tiny = np.finfo(np.float32).tiny
    special = np.array([0., -0., tiny, -tiny, tiny / 3, -tiny / 3, 1e-39,
                        -1e-45, 1.0, -2.5, 3e38, -3e38, np.inf, -np.inf,
                        np.nan], np.float32)
    rng = np.random.default_rng(0)
    x = np.concatenate([special, rng.standard_normal(1000).astype(np.float32),
                        (rng.standard_normal(1000) * 1e-30).astype(
                            np.float32)])
    for a, b in [(0.01, 0.), (1e-10, -1e-38), (2.0, 1e-39), (-3.0, 0.5),
                 (tiny / 2, 0.), (1e30, 1e38)]:
      a, b = np.float32(a), np.float32(b)
      if kind == "truncated_normal":
        want = chunked_random.add(chunked_random.mul(a, x), b)
      else:
        want = chunked_random.add(b, chunked_random.mul(a, x))
      got = chunked_random.scale(kind, jnp.asarray(x), a, b)
      self.assertEqual(got.dtype, np.float32)
      np.testing.assert_array_equal(got.view(np.uint32),
                                    np.asarray(want).view(np.uint32),
                                    err_msg=f"a={a}, b={b}")

  def test_pax_layer_equals_haiku(self):
    layer = pax.Conv2D(1, 2, 3, rng_key=KEY)
    want = hk.transform(lambda x: hk.Conv2D(2, 3)(x)).init(
        KEY, jnp.zeros((1, 3, 3, 1)))
    chex.assert_trees_all_equal(layer.params, want)
    # (nets_test checks ResNets, whose BatchNorm state comes from the
    # jitted forward pass.)

  def test_same_arrays_in_another_process(self):
    code = ("import hashlib, jax, numpy as np, pax_haiku as pax;"
            "m = pax.nets.MLP(5, [300, 7], rng_key=jax.random.PRNGKey(1));"
            "print(hashlib.sha256(b''.join(np.asarray(l).tobytes() for l in "
            "jax.tree_util.tree_leaves(m.params))).hexdigest())")
    env = dict(os.environ, PYTHONPATH=_ROOT + os.pathsep +
               os.environ.get("PYTHONPATH", ""))
    other = subprocess.run([sys.executable, "-c", code], env=env, check=True,
                           capture_output=True, text=True).stdout.strip()
    m = pax.nets.MLP(5, [300, 7], rng_key=jax.random.PRNGKey(1))
    here = hashlib.sha256(b"".join(
        np.asarray(l).tobytes()
        for l in jax.tree_util.tree_leaves(m.params))).hexdigest()
    self.assertEqual(other, here)


if __name__ == "__main__":
  quick_exit.main()
