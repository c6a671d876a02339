"""pax.nets: plain Haiku parameters load into the pax nets, same outputs."""

from absl.testing import parameterized
import functools
import inspect

import chex
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

import pax_haiku as pax
import quick_exit  # tests/quick_exit.py, beside this file

KEY = jax.random.PRNGKey(42)


def _x(*shape):
  return jnp.asarray(np.random.RandomState(0).normal(size=shape), jnp.float32)


def _assert_same(actual, expected, rtol=1e-6, atol=0.0):
  chex.assert_trees_all_equal_structs(actual, expected)
  chex.assert_trees_all_close(actual, expected, rtol=rtol, atol=atol)


def _strip_rng(state):
  return {k: v for k, v in state.items() if k != "~"}


class MLPTest(parameterized.TestCase):

  def test_loads_plain_haiku_params(self):
    x = _x(2, 3)
    f = hk.transform(lambda x: hk.nets.MLP([4, 4], activate_final=True)(x))
    params = f.init(KEY, x)
    net = pax.nets.MLP(3, [4, 4], activate_final=True)
    net = net.update_parameters(params)
    _assert_same(net.params, params, rtol=0)
    _assert_same(net(x), f.apply(params, None, x), rtol=0)

  def test_same_init_as_haiku_and_summary(self):
    x = _x(2, 3)
    net = pax.nets.MLP(3, [4, 4], rng_key=KEY)
    _assert_same(net.params,
                 hk.transform(lambda x: hk.nets.MLP([4, 4])(x)).init(KEY, x),
                 rtol=0)
    self.assertIn("Total: 36 parameters, 0 state values", net.summary())
    self.assertEqual(net.summary().splitlines()[0].split("  #")[0],
                     "MLP(input_dim=3, output_sizes=(4, 4))")

  @parameterized.named_parameters(
      ("input_dim", lambda: pax.nets.MLP(0, [3]), "input_dim"),
      ("output_sizes", lambda: pax.nets.MLP(3, 4), "output_sizes"),
      ("activation", lambda: pax.nets.MLP(3, [4], activation="relu"),
       "activation"),
  )
  def test_bad_arguments(self, make, pattern):
    with self.assertRaisesRegex((ValueError, TypeError), pattern):
      make()

  def test_bad_input(self):
    with self.assertRaisesRegex(ValueError, r"\(\.\.\., 3\)"):
      pax.nets.MLP(3, [4])(_x(2, 5))


def _host_values(tree, positive):
  """NumPy values for a tree of shapes: signed (or, for BatchNorm's moving
  statistics, positive) floats; integers (counters) 1."""
  # Drawn in float32 (ResNet18 has 11M parameters: float64 draws and their
  # conversion cost twice as much).
  rng = np.random.default_rng(0)

  def value(shape):
    if not jnp.issubdtype(shape.dtype, jnp.floating):
      return jnp.ones(shape.shape, shape.dtype)
    if positive:
      x = rng.uniform(0.5, 1.5, shape.shape).astype(np.float32)
    else:
      x = rng.standard_normal(shape.shape, dtype=np.float32) * np.float32(0.1)
    return jnp.asarray(x, shape.dtype)

  return jax.tree_util.tree_map(value, tree)


def _hk_resnet(cls, **kwargs):
  def f(x, is_training):
    return cls(num_classes=10, **kwargs)(x, is_training=is_training)
  return hk.transform_with_state(f)


# A small generic ResNet: built eagerly in the tests (full-size ResNets have
# dozens of kernel shapes, each an expensive XLA compile on CPU).
SMALL = dict(blocks_per_group=(1, 1, 1, 1), bottleneck=False,
             channels_per_group=(4, 4, 4, 4),
             use_projection=(False, True, True, True),
             initial_conv_config={"output_channels": 4, "kernel_shape": 3})


class ResNetTest(parameterized.TestCase):

  def test_resnet18_loads_plain_haiku_params_and_state(self):
    x = _x(1, 32, 32, 3)
    f = _hk_resnet(hk.nets.ResNet18)
    # A plain Haiku checkpoint: the structure Haiku's own init creates, with
    # NumPy values (the values do not matter here; computing Haiku's 11M
    # initial values with XLA costs seconds on CPU).
    params, state = jax.eval_shape(
        functools.partial(f.init, is_training=True), KEY, x)
    params, state = _host_values(params, False), _host_values(state, True)
    # The pax net's structure, without paying for its own initialization.
    net = jax.eval_shape(lambda: pax.nets.ResNet18(
        3, 10, data_format="NHWC", padding="SAME"))
    net = net.update_parameters(params).update_state(state)
    _assert_same((net.params, net.state), (params, state), rtol=0)

    for training in (True, False):
      with self.subTest(training=training):
        model = net.train() if training else net.eval()
        new_net, y = pax.purecall(model, x)
        ref, ref_state = f.apply(params, state, None, x, training)
        _assert_same((y, new_net.state), (ref, ref_state), atol=1e-6)

  @parameterized.named_parameters(
      ("resnet34", pax.nets.ResNet34, hk.nets.ResNet34),
      ("resnet50", pax.nets.ResNet50, hk.nets.ResNet50),
  )
  def test_deeper_resnets_have_haiku_structure(self, pax_cls, hk_cls):
    net = jax.eval_shape(lambda: pax_cls(3, 10))  # PAX's NCHW default.
    init = functools.partial(_hk_resnet(hk_cls).init, is_training=True)
    params, state = jax.eval_shape(init, KEY, jnp.zeros((1, 32, 32, 3)))
    chex.assert_trees_all_equal_shapes_and_dtypes(net.params, params)
    chex.assert_trees_all_equal_shapes_and_dtypes(net.state, state)

  def test_presets_take_pax_nchw_images_by_default(self):
    # PAX: `pax.nets.ResNet18(3, 1)` on NCHW images, PAX's padding.
    params = list(inspect.signature(pax.nets.ResNet18).parameters)
    self.assertEqual(params[:4], ["input_channels", "num_classes",
                                  "logits_config", "initial_conv_config"])
    net = jax.eval_shape(lambda: pax.nets.ResNet18(3, 1))
    self.assertEqual((net.data_format, net.padding), ("NCHW", "pax"))
    y = jax.eval_shape(pax.pure(lambda n, x: n(x)), net,
                       jnp.zeros((1, 3, 18, 18)))
    self.assertEqual(y.shape, (1, 1))
    with self.assertRaisesRegex(ValueError, r"\(N, 3, H, W\)"):
      jax.eval_shape(lambda n: n.eval()(jnp.zeros((1, 18, 18, 3))), net)
    generic = jax.eval_shape(lambda: pax.nets.ResNet(3, 1))  # Haiku's.
    self.assertEqual((generic.data_format, generic.padding), ("NHWC", "SAME"))

  def test_small_resnet_built_eagerly_equals_haiku(self):
    x = _x(1, 32, 32, 3)  # The sample shape: eager ops compiled at init.
    net = pax.nets.ResNet(3, 10, rng_key=KEY, **SMALL)
    f = _hk_resnet(hk.nets.ResNet, **SMALL)
    params, state = f.init(KEY, jnp.zeros((1, 32, 32, 3)), True)
    _assert_same((net.params, net.state), (params, state), rtol=0)
    new_net, y = pax.purecall(net, x)
    ref, ref_state = f.apply(params, state, None, x, True)
    _assert_same((y, new_net.state), (ref, ref_state), atol=1e-6)
    _assert_same(net.eval()(x), f.apply(params, state, None, x, False)[0],
                 atol=1e-6)
    self.assertIn("Total: ", net.summary())
    with self.assertRaisesRegex(ValueError, r"\(N, H, W, 3\)"):
      net.eval()(_x(1, 32, 32, 1))


@functools.lru_cache(maxsize=None)
def _lm():
  """One eagerly built pax LM shared by the tests (modules are immutable)."""
  return pax.nets.TransformerLM(**TransformerTest.CONFIG, dropout_rate=0.1,
                                rng_key=KEY)


class TransformerTest(parameterized.TestCase):

  CONFIG = dict(vocab_size=11, dim=8, num_heads=2, num_layers=2, max_len=6)

  def _hk_lm(self, dropout_rate=0.1):
    c = self.CONFIG

    def f(tokens, is_training, mask=None):
      lm = pax.nets.haiku_transformer.TransformerLM(
          c["vocab_size"], c["dim"], c["num_heads"], c["num_layers"],
          c["max_len"], dropout_rate)
      return lm(tokens, is_training=is_training, mask=mask)

    return hk.transform(f)

  def test_lm_loads_plain_haiku_params(self):
    tokens = jnp.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    mask = jnp.array([[True] * 4, [True, True, False, False]])
    f = self._hk_lm()
    net = _lm()  # Built first: Haiku's init below reuses its compilations.
    params = f.init(jax.random.PRNGKey(7), tokens, True)  # Plain Haiku code.
    net = net.update_parameters(params)
    _assert_same(net.params, params, rtol=0)
    # Training mode: dropout with the key the net holds.
    new_net, train = pax.purecall(net, tokens)
    rng = jax.random.split(net.rng_key)[1]
    _assert_same(train, f.apply(params, rng, tokens, True), atol=1e-6)
    self.assertFalse(bool(jnp.all(new_net.rng_key == net.rng_key)))
    # Eval mode: no dropout, needs no RNG and no pax.purecall.
    _assert_same(net.eval()(tokens), f.apply(params, None, tokens, False),
                 atol=1e-6)
    _assert_same(net.eval()(tokens, mask),
                 f.apply(params, None, tokens, False, mask), atol=1e-6)
    # Under jit too.
    _assert_same(jax.jit(lambda n, t: n.eval()(t))(net, tokens),
                 f.apply(params, None, tokens, False), atol=1e-6)

  def test_lm_eager_init_equals_haiku_init_and_to_haiku(self):
    tokens = jnp.zeros((1, 1), jnp.int32)
    net = _lm()
    params = self._hk_lm().init(KEY, tokens, True)  # Same key as _lm().
    _assert_same(net.params, params, rtol=0)
    g = pax.to_haiku(net)
    params, state = g.init(None, tokens)
    _assert_same((params, state), (net.params, net.state), rtol=0)

  def test_stack_matches_haiku_and_is_causal(self):
    h = _x(1, 5, 8)
    h2 = h.at[:, -1].set(7.0)
    net = jax.eval_shape(lambda: pax.nets.Transformer(8, 2, 2))
    params = _lm().params
    params = {k[len("transformer_lm/"):]: v for k, v in params.items()
              if k.startswith("transformer_lm/transformer/")}
    net = net.update_parameters(params)
    f = hk.transform(lambda h: pax.nets.haiku_transformer.Transformer(2, 2)(
        h, is_training=False))
    out, out2, ref = jax.jit(lambda n, p: (n(h), n(h2), f.apply(p, None, h)))(
        net, params)
    _assert_same(out, ref, atol=1e-6)
    # Changing the last position does not change earlier outputs.
    np.testing.assert_allclose(out2[:, :-1], out[:, :-1], rtol=1e-6,
                               atol=1e-6)

  def test_training_step_with_optax(self):
    import optax  # pylint: disable=g-import-not-at-top
    net = _lm().eval()  # No dropout: a deterministic loss.
    tokens = jnp.array([[1, 2, 3, 4, 5, 6]])
    opt = optax.adam(1e-2)

    def loss_fn(params, net, tokens):
      logits = net.update_parameters(params)(tokens[:, :-1])
      return optax.softmax_cross_entropy_with_integer_labels(
          logits, tokens[:, 1:]).mean()

    @jax.jit
    def step(net, opt_state, tokens):
      loss, grads = jax.value_and_grad(loss_fn)(net.parameters(), net, tokens)
      updates, opt_state = opt.update(grads, opt_state)
      params = optax.apply_updates(net.parameters(), updates)
      return net.update_parameters(params), opt_state, loss

    opt_state = opt.init(net.parameters())
    losses = []
    for _ in range(5):
      net, opt_state, loss = step(net, opt_state, tokens)
      losses.append(float(loss))
    self.assertLess(losses[-1], losses[0])

  @parameterized.named_parameters(
      ("heads", lambda: pax.nets.TransformerLM(11, 8, 3, 1, 6), "divisible"),
      ("dropout", lambda: pax.nets.Transformer(8, 2, 1, dropout_rate=1.0),
       "dropout_rate"),
      ("layers", lambda: pax.nets.Transformer(8, 2, 0), "num_layers"),
  )
  def test_bad_arguments(self, make, pattern):
    with self.assertRaisesRegex(ValueError, pattern):
      make()

  def test_bad_inputs(self):
    lm = jax.eval_shape(lambda: pax.nets.TransformerLM(**self.CONFIG))
    with self.assertRaisesRegex(ValueError, "T <= 6"):
      lm(jnp.zeros((1, 7), jnp.int32))
    with self.assertRaisesRegex(TypeError, "integer"):
      lm(jnp.zeros((1, 3)))
    with self.assertRaisesRegex(ValueError, "mask"):
      lm(jnp.zeros((1, 3), jnp.int32), jnp.ones((1, 4), bool))


if __name__ == "__main__":
  quick_exit.main()
