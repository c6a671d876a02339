"""Registry of every public layer, checked against plain Haiku.

Like Haiku's module descriptors: each public layer (a `pax.Module` subclass or
layer function exported by `pax_haiku`) has an entry with a sample input and
the plain Haiku function it must match. For every entry the suite checks:

- same params -> same outputs (and new state) as the plain Haiku function,
  in training and in eval mode (rtol 1e-6);
- `jax.jit`, `jax.vmap` and `jax.grad` (gradients equal Haiku's);
- `pax.to_haiku` / `pax.from_haiku` round trips;
- `train()` / `eval()` behaviour; `summary()` counts; clear input errors.

Adding a public layer without an entry here fails `test_registry_is_complete`.
"""

import dataclasses
import functools
import inspect
from typing import Any, Callable, Dict, Optional, Tuple

from absl.testing import parameterized
import chex
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

import pax_haiku as pax
import quick_exit  # tests/quick_exit.py, beside this file

RTOL = 1e-6
KEY = jax.random.PRNGKey(0)


def _x(*shape: int, seed: int = 0) -> jax.Array:
  # NumPy's RNG: jax.random would compile one program per input shape.
  rng = np.random.RandomState(seed)
  return jnp.asarray(rng.normal(size=shape).astype(np.float32))


def _ids(*shape: int) -> jax.Array:
  return (jnp.arange(np.prod(shape)).reshape(shape) * 3) % 10


@dataclasses.dataclass(frozen=True)
class Entry:
  """How to build, call and check one public layer.

  Attributes:
    make: builds the layer (a module), or is the layer function itself.
    inputs: sample positional inputs.
    haiku_fn: the plain Haiku function with the same parameters/outputs; it
      takes the same inputs (plus `train_kwarg=<bool>` if set).
    train_kwarg: the Haiku function's training flag (`is_training`, ...).
    bad_input: an input tuple that must be rejected with a clear error.
    state_changes_in_train: a training-mode call updates state.
    advances_in_eval: the state changes in eval mode too (RngSeq).
    vmap_module: vmap over a stack of modules instead of over inputs.
    is_function: a layer function (no module).
    error_names: the layer the bad-input error names (default: this one).
  """
  make: Callable[[], Any]
  inputs: Callable[[], Tuple[Any, ...]]
  haiku_fn: Callable[..., Any]
  train_kwarg: Optional[str] = None
  bad_input: Optional[Callable[[], Tuple[Any, ...]]] = None
  state_changes_in_train: bool = False
  advances_in_eval: bool = False
  vmap_module: bool = False
  is_function: bool = False
  error_names: Optional[str] = None


class _HkSequential(hk.Module):
  """Plain Haiku equivalent of the registry's pax.Sequential."""

  def __init__(self):
    super().__init__(name="sequential")
    self.fc = hk.Linear(4)
    self.norm = hk.LayerNorm(-1, True, True)

  def __call__(self, x):
    return self.norm(jax.nn.relu(self.fc(x)))


def _swap(core_fn):
  """A Haiku core `(x, state) -> (h, state)` in PAX order."""
  def f(state, x):
    h, state = core_fn()(x, state)
    return state, h
  return f


def _hk_ema(x, update_stats):
  ema = hk.ExponentialMovingAverage(0.9, zero_debias=False)
  return ema(x) if update_stats else ema.average


def _hk_dropout(x, is_training):
  return hk.dropout(hk.next_rng_key(), 0.5, x) if is_training else x


_CAUSAL = jnp.tril(jnp.ones((1, 1, 5, 5), bool))

REGISTRY: Dict[str, Entry] = {
    "Linear": Entry(
        lambda: pax.Linear(3, 4), lambda: (_x(2, 3),),
        lambda x: hk.Linear(4)(x), bad_input=lambda: (_x(2, 5),)),
    # (Convolution shapes are chosen so that kernels share shapes with the
    # transposed ones: every new parameter shape is an XLA compile.)
    "Conv1D": Entry(
        lambda: pax.Conv1D(4, 3, 3), lambda: (_x(2, 5, 4),),
        lambda x: hk.Conv1D(3, 3)(x), bad_input=lambda: (_x(2, 4, 5),)),
    "Conv2D": Entry(
        lambda: pax.Conv2D(4, 3, 3, stride=2, padding="VALID"),
        lambda: (_x(2, 5, 5, 4),),
        lambda x: hk.Conv2D(3, 3, stride=2, padding="VALID")(x),
        bad_input=lambda: (_x(5, 5, 4, 2),)),
    "Conv1DTranspose": Entry(
        lambda: pax.Conv1DTranspose(3, 4, 3, stride=2), lambda: (_x(2, 5, 3),),
        lambda x: hk.Conv1DTranspose(4, 3, stride=2)(x),
        bad_input=lambda: (_x(2, 5, 4),)),
    "Conv2DTranspose": Entry(
        lambda: pax.Conv2DTranspose(3, 4, 3, data_format="NCHW"),
        lambda: (_x(2, 3, 3, 3),),
        lambda x: hk.Conv2DTranspose(4, 3, data_format="NCHW")(x),
        bad_input=lambda: (_x(2, 4, 3, 3),)),
    "BatchNorm1D": Entry(
        lambda: pax.BatchNorm1D(3), lambda: (_x(2, 5, 3),),
        lambda x, is_training: hk.BatchNorm(True, True, 0.9)(x, is_training),
        train_kwarg="is_training", state_changes_in_train=True,
        bad_input=lambda: (_x(2, 3),)),
    "BatchNorm2D": Entry(
        lambda: pax.BatchNorm2D(3, decay_rate=0.5, data_format="NCHW"),
        lambda: (_x(2, 3, 4, 4),),
        lambda x, is_training: hk.BatchNorm(
            True, True, 0.5, data_format="channels_first")(x, is_training),
        train_kwarg="is_training", state_changes_in_train=True,
        bad_input=lambda: (_x(2, 4, 4, 3),)),
    "LayerNorm": Entry(
        lambda: pax.LayerNorm(3), lambda: (_x(2, 5, 3),),
        lambda x: hk.LayerNorm(-1, True, True)(x),
        bad_input=lambda: (_x(2, 3, 5),)),
    "GroupNorm": Entry(
        lambda: pax.GroupNorm(2, 4), lambda: (_x(2, 5, 4),),
        lambda x: hk.GroupNorm(2)(x), bad_input=lambda: (_x(2, 5, 3),)),
    "Embed": Entry(
        lambda: pax.Embed(10, 4), lambda: (_ids(2, 5),),
        lambda ids: hk.Embed(10, 4)(ids), bad_input=lambda: (_x(2, 5),)),
    "VanillaRNN": Entry(
        lambda: pax.VanillaRNN(3, 4), lambda: (_x(2, 4, seed=1), _x(2, 3)),
        _swap(lambda: hk.VanillaRNN(4)),
        bad_input=lambda: (_x(2, 4), _x(2, 5))),
    "LSTM": Entry(
        lambda: pax.LSTM(3, 4),
        lambda: (hk.LSTMState(_x(2, 4, seed=1), _x(2, 4, seed=2)), _x(2, 3)),
        _swap(lambda: hk.LSTM(4)),
        bad_input=lambda: (hk.LSTMState(_x(3, 4), _x(3, 4)), _x(2, 3))),
    "GRU": Entry(
        lambda: pax.GRU(3, 4), lambda: (_x(2, 4, seed=1), _x(2, 3)),
        _swap(lambda: hk.GRU(4)), bad_input=lambda: (_x(2, 3), _x(2, 3))),
    "MultiHeadAttention": Entry(
        lambda: pax.MultiHeadAttention(2, 2, w_init_scale=1.0),
        lambda: (_x(2, 5, 4), _x(2, 5, 4, seed=1), _x(2, 5, 4, seed=2),
                 _CAUSAL),
        lambda q, k, v, mask: hk.MultiHeadAttention(
            2, 2, w_init=hk.initializers.VarianceScaling(1.0))(q, k, v, mask),
        bad_input=lambda: (_x(2, 5, 3), _x(2, 5, 3), _x(2, 5, 3))),
    "Dropout": Entry(
        lambda: pax.Dropout(0.5), lambda: (_x(2, 5, 3),), _hk_dropout,
        train_kwarg="is_training", state_changes_in_train=True),
    "Sequential": Entry(
        lambda: pax.Sequential(pax.Linear(3, 4), jax.nn.relu,
                               pax.LayerNorm(4)),
        lambda: (_x(2, 3),), lambda x: _HkSequential()(x),
        bad_input=lambda: (_x(2, 4),), error_names="Linear"),
    "Lambda": Entry(
        lambda: pax.Lambda(jax.nn.relu), lambda: (_x(2, 3),), jax.nn.relu),
    "Identity": Entry(
        pax.Identity, lambda: (_x(2, 3),), lambda x: x),
    "RngSeq": Entry(
        lambda: pax.RngSeq(seed=1), lambda: (2,),
        lambda n: list(hk.next_rng_keys(n)), state_changes_in_train=True,
        advances_in_eval=True, vmap_module=True, bad_input=lambda: (0,)),
    "EMA": Entry(
        lambda: pax.EMA(_x(3, seed=3), 0.9), lambda: (_x(3),), _hk_ema,
        train_kwarg="update_stats", state_changes_in_train=True,
        bad_input=lambda: (_x(4),)),
    "avg_pool": Entry(
        lambda: pax.avg_pool, lambda: (_x(2, 6, 6, 3), (1, 2, 2, 1),
                                       (1, 2, 2, 1), "VALID"),
        hk.avg_pool, is_function=True,
        bad_input=lambda: (_x(2, 6, 6, 3), (1, 2, 2, 1), 2, "FULL")),
    "max_pool": Entry(
        lambda: pax.max_pool, lambda: (_x(2, 6, 6, 3), (1, 3, 3, 1),
                                       (1, 2, 2, 1), "SAME"),
        hk.max_pool, is_function=True,
        bad_input=lambda: (_x(2, 6, 6, 3), (1, 0, 2, 1), 2, "SAME")),
    "dropout": Entry(
        lambda: pax.dropout, lambda: (jax.random.PRNGKey(3), 0.5, _x(2, 3)),
        hk.dropout, is_function=True,
        bad_input=lambda: (jax.random.PRNGKey(3), 1.5, _x(2, 3))),
}

# Public Module subclasses that are not layers (each with the reason).
NOT_LAYERS = {
    "Module": "the base class",
    "HaikuModule": "the bridge's base class (tests/haiku_bridge_test.py)",
    "Optimizer": "optax state holder (tests/optim_test.py)",
    "ParameterModule": "PAX's base class for user modules whose arrays are "
                       "all trainable (tests/pax_api_test.py)",
    "StateModule": "PAX's base class for user modules without trainable "
                   "arrays (tests/pax_api_test.py)",
}


def _public_layers() -> Dict[str, Any]:
  """Exported Module subclasses and layer functions (from `_src/nn`)."""
  out = {}
  for name in pax.__all__:
    value = getattr(pax, name)
    if inspect.isclass(value) and issubclass(value, pax.Module):
      out[name] = value
    elif inspect.isfunction(value) and value.__module__.startswith(
        "pax_haiku._src.nn"):
      out[name] = value
  return out


@functools.lru_cache(maxsize=None)
def _layer(name: str) -> Any:
  """Each layer is built once (modules are immutable, so sharing is safe)."""
  return REGISTRY[name].make()


def _modules():
  return [(n, n) for n, e in REGISTRY.items() if not e.is_function]


def _all():
  return [(n, n) for n in REGISTRY]


def _split(inputs: Tuple[Any, ...]):
  """Array inputs are traced; other inputs (ints, strings) stay static."""
  is_array = [bool(jax.tree_util.tree_leaves(x)) and all(
      isinstance(l, jax.Array) for l in jax.tree_util.tree_leaves(x))
              for x in inputs]
  arrays = tuple(x for x, a in zip(inputs, is_array) if a)

  def merge(traced):
    it = iter(traced)
    return tuple(next(it) if a else x for x, a in zip(inputs, is_array))

  return arrays, merge


def _rng(layer: Any) -> Optional[jax.Array]:
  """The key a Haiku-backed layer hands to Haiku on its next call."""
  key = getattr(layer, "rng_key", None)
  return None if key is None else jax.random.split(key)[1]


def _call(name: str, layer: Any, *inputs: Any):
  """`(new_layer, output)` of one call (`(None, output)` for functions)."""
  if REGISTRY[name].is_function:
    return None, layer(*inputs)
  return pax.purecall(layer, *inputs)


def _haiku_apply(name: str, layer: Any, *inputs: Any, training: bool = True):
  """`(output, new_state)` of the plain Haiku function on layer's params."""
  entry = REGISTRY[name]
  if entry.is_function:
    return entry.haiku_fn(*inputs), None
  kwargs = {entry.train_kwarg: training} if entry.train_kwarg else {}
  f = hk.transform_with_state(entry.haiku_fn)
  return f.apply(layer.params, layer.state, _rng(layer), *inputs, **kwargs)


def _float_sum(tree: Any) -> jax.Array:
  leaves = [l for l in jax.tree_util.tree_leaves(tree)
            if jnp.issubdtype(l.dtype, jnp.floating)]
  return sum(jnp.sum(l) for l in leaves)


def _assert_close(actual: Any, expected: Any, rtol: float = RTOL,
                  atol: float = 0.0) -> None:
  chex.assert_trees_all_equal_structs(actual, expected)
  chex.assert_trees_all_close(actual, expected, rtol=rtol, atol=atol)


class RegistryTest(parameterized.TestCase):

  def test_registry_is_complete(self):
    public = _public_layers()
    missing = sorted(set(public) - set(REGISTRY) - set(NOT_LAYERS))
    self.assertEqual(
        missing, [],
        f"Public layers without a registry entry: {missing}. Add an Entry "
        "to REGISTRY in tests/layers_test.py (or, for a public Module that "
        "is not a layer, to NOT_LAYERS with the reason).")
    stale = sorted(set(REGISTRY) - set(public))
    self.assertEqual(stale, [], f"Registry entries not exported: {stale}")

  @parameterized.named_parameters(*_all())
  def test_same_output_as_haiku(self, name):
    layer = _layer(name)
    inputs = REGISTRY[name].inputs()
    modes = [True] if REGISTRY[name].is_function else [True, False]
    for training in modes:
      with self.subTest(training=training):
        if not REGISTRY[name].is_function:
          layer = layer.train() if training else layer.eval()
        new_layer, out = _call(name, layer, *inputs)
        ref, ref_state = _haiku_apply(name, layer, *inputs, training=training)
        _assert_close(out, ref)
        if new_layer is not None and training:
          # Haiku's new state; the RNG key is pax's own state.
          state = {k: v for k, v in new_layer.state.items() if k != "~"}
          ref_state = {k: v for k, v in ref_state.items() if k != "~"}
          _assert_close(state, ref_state)

  @parameterized.named_parameters(*_modules())
  def test_params_are_haiku_params(self, name):
    layer = _layer(name)
    inputs = REGISTRY[name].inputs()
    f = hk.transform_with_state(REGISTRY[name].haiku_fn)
    kwargs = ({REGISTRY[name].train_kwarg: True}
              if REGISTRY[name].train_kwarg else {})
    arrays, merge = _split(inputs)
    params, state = jax.eval_shape(
        lambda key, a: f.init(key, *merge(a), **kwargs),
        jax.random.PRNGKey(0), arrays)
    chex.assert_trees_all_equal_shapes_and_dtypes(layer.params, params)
    hk_state = {k: v for k, v in layer.state.items() if k != "~"}
    chex.assert_trees_all_equal_shapes_and_dtypes(hk_state, state)

  @parameterized.named_parameters(*_all())
  def test_jit_and_vmap(self, name):
    entry = REGISTRY[name]
    layer = _layer(name)
    evaluated = layer if entry.is_function else layer.eval()
    inputs = entry.inputs()
    arrays, merge = _split(inputs)
    if entry.vmap_module:  # A batch of modules (e.g. of RNG sequences).
      others = (evaluated, pax.RngSeq(seed=7).eval())
      batch = jax.tree_util.tree_map(lambda a, b: jnp.stack([a, b]), *others)
      batched = lambda b: jax.vmap(lambda m: _call(name, m, *inputs)[1])(b)
      singles = [_call(name, m, *inputs)[1] for m in others]
    else:  # A batch of inputs (made with NumPy: eager jnp ops compile).
      second = jax.tree_util.tree_map(
          lambda a: a if a.dtype in (jnp.bool_, jnp.uint32) else jnp.asarray(
              (np.asarray(a) + 1) % 10 if jnp.issubdtype(a.dtype, jnp.integer)
              else 0.5 * np.asarray(a) + np.float32(0.25)), arrays)
      batch = jax.tree_util.tree_map(
          lambda a, b: jnp.asarray(np.stack([a, b])), arrays, second)
      batched = lambda b: jax.vmap(
          lambda a: _call(name, evaluated, *merge(a))[1])(b)
      singles = [_call(name, evaluated, *merge(a))[1]
                 for a in (arrays, second)]

    def both(layer, arrays, batch):
      # A training-mode call (state updates included) and an eval-mode vmap,
      # in one compiled program.
      single = _call(name, layer if not entry.is_function else
                     entry.make(), *merge(arrays))
      return single, batched(batch)

    if entry.is_function:
      single, out = jax.jit(lambda a, b: both(None, a, b))(arrays, batch)
    else:
      single, out = jax.jit(both)(layer, arrays, batch)
    _assert_close(single, _call(name, layer, *inputs), atol=1e-6)
    for i, expected in enumerate(singles):
      _assert_close(jax.tree_util.tree_map(lambda y, i=i: y[i], out),
                    expected, atol=1e-6)

  # RngSeq outputs integer keys: nothing to differentiate.
  @parameterized.named_parameters(*[c for c in _all() if c[0] != "RngSeq"])
  def test_grad(self, name):
    entry = REGISTRY[name]
    layer = _layer(name)
    inputs = entry.inputs()
    arrays, merge = _split(inputs)
    is_float = [jnp.issubdtype(a.dtype, jnp.floating)
                for a in jax.tree_util.tree_leaves(arrays)]

    def with_floats(floats):
      leaves, treedef = jax.tree_util.tree_flatten(arrays)
      it = iter(floats)
      return merge(treedef.unflatten(
          [next(it) if f else l for l, f in zip(leaves, is_float)]))

    floats = [l for l, f in zip(jax.tree_util.tree_leaves(arrays), is_float)
              if f]

    def pax_loss(params, floats):
      model = layer if entry.is_function else layer.update_parameters(params)
      return _float_sum(_call(name, model, *with_floats(floats))[1])

    def grads(floats):
      params = None if entry.is_function else layer.parameters()
      hk_params = None if entry.is_function else layer.params
      return (jax.grad(pax_loss, argnums=(0, 1))(params, floats),
              jax.grad(hk_loss, argnums=(0, 1))(hk_params, floats))

    def hk_loss(hk_params, floats):
      model = layer if entry.is_function else layer.update_parameters(
          hk_params)
      return _float_sum(_haiku_apply(name, model, *with_floats(floats))[0])

    # One compiled program (eager grads compile every primitive separately).
    (g_params, g_inputs), (ref_params, ref_inputs) = jax.jit(grads)(floats)
    _assert_close(g_inputs, ref_inputs, atol=1e-6)
    if not entry.is_function:
      pax.assert_structure_equal(g_params, layer.parameters())
      got = g_params.params if jax.tree_util.tree_leaves(ref_params) else {}
      _assert_close(got, ref_params, atol=1e-6)

  @parameterized.named_parameters(*_modules())
  def test_to_haiku_from_haiku_round_trip(self, name):
    layer = _layer(name)
    inputs = REGISTRY[name].inputs()
    _, expected = pax.purecall(layer, *inputs)
    f = pax.to_haiku(layer)
    params, state = f.init(None, *inputs)
    _assert_close((params, state), (layer.params, layer.state), rtol=0)
    out, _ = f.apply(params, state, None, *inputs)
    _assert_close(out, expected, rtol=0)
    back = pax.from_haiku(f)(*inputs)
    _assert_close(back.params, layer.params, rtol=0)
    _assert_close(pax.purecall(back, *inputs)[1], expected, rtol=0)

  # Stateful layers are covered by test_same_output_as_haiku.
  @parameterized.named_parameters(*[
      c for c in _modules()
      if not REGISTRY[c[0]].train_kwarg and c[0] != "RngSeq"])
  def test_plain_haiku_module_loads_layer_params(self, name):
    entry = REGISTRY[name]
    layer = _layer(name)
    inputs = entry.inputs()
    hk_module = pax.from_haiku(entry.haiku_fn)(*inputs)
    if layer.params:
      hk_module = hk_module.update_parameters(layer.params)
    _assert_close(hk_module(*inputs), layer(*inputs), rtol=0)

  @parameterized.named_parameters(*_modules())
  def test_train_eval(self, name):
    entry = REGISTRY[name]
    layer = _layer(name)
    inputs = entry.inputs()
    self.assertTrue(layer.training)
    evaluated = layer.eval()
    self.assertTrue(all(not m.training for m in _tree(evaluated)))
    self.assertTrue(all(m.training for m in _tree(evaluated.train())))
    self.assertTrue(layer.training, "eval() must not change the original")
    # Eval mode never changes state (except an RNG sequence's key).
    new, _ = pax.purecall(evaluated, *inputs)
    if not entry.advances_in_eval:
      _assert_close(new.state, evaluated.state, rtol=0)
      evaluated(*inputs)  # No purecall needed for inference.
    new, _ = pax.purecall(layer, *inputs)
    changed = jax.tree_util.tree_leaves(jax.tree_util.tree_map(
        lambda a, b: bool(jnp.any(a != b)), new.state, layer.state))
    self.assertEqual(any(changed), entry.state_changes_in_train)
    if entry.state_changes_in_train:
      with self.assertRaisesRegex(ValueError, "purecall"):
        layer(*inputs)  # Updating state outside pax.pure is an error.

  @parameterized.named_parameters(*_modules())
  def test_summary_counts(self, name):
    layer = _layer(name)
    total = sum(np.size(v) for d in layer.params.values() for v in d.values())
    text = layer.summary()
    self.assertIn(f"Total: {total} parameters", text)
    self.assertIn(pax.module_class(layer).__name__, text.splitlines()[0])

  @parameterized.named_parameters(
      *[(n, n) for n, e in REGISTRY.items() if e.bad_input])
  def test_bad_input_is_a_clear_error(self, name):
    layer = _layer(name)
    with self.assertRaises((ValueError, TypeError)) as ctx:
      _call(name, layer, *REGISTRY[name].bad_input())
    entry = REGISTRY[name]
    expected = entry.error_names or (
        f"pax.{name}" if entry.is_function else name)
    self.assertIn(expected, str(ctx.exception))


def _tree(module):
  return list(pax._src.module.iter_modules(module))  # pylint: disable=protected-access


class ConstructorErrorTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ("linear_dim", lambda: pax.Conv2D(3, 0, 3), ValueError, "out_features"),
      ("conv_format", lambda: pax.Conv2D(3, 4, 3, data_format="NWC"),
       ValueError, "data_format"),
      ("conv_padding", lambda: pax.Conv1D(3, 4, 3, padding="FULL"),
       ValueError, "padding"),
      ("conv_kernel", lambda: pax.Conv2D(3, 4, (3, 3, 3)), ValueError,
       "kernel_shape"),
      ("conv_groups", lambda: pax.Conv2D(3, 4, 3, feature_group_count=2),
       ValueError, "divisible"),
      ("bn_channels", lambda: pax.BatchNorm2D(-1), ValueError,
       "num_channels"),
      ("bn_decay", lambda: pax.BatchNorm1D(3, decay_rate=2.0), ValueError,
       "decay_rate"),
      ("ln_axis", lambda: pax.LayerNorm(3, axis="last"), ValueError, "axis"),
      ("gn_groups", lambda: pax.GroupNorm(3, 4), ValueError, "divisible"),
      ("embed", lambda: pax.Embed(0, 4), ValueError, "vocab_size"),
      ("lstm", lambda: pax.LSTM(3, 0), ValueError, "hidden_dim"),
      ("mha", lambda: pax.MultiHeadAttention(2, 2, w_init_scale=-1.0),
       ValueError, "w_init_scale"),
      ("dropout", lambda: pax.Dropout(1.0), ValueError, "dropout_rate"),
      ("ema_int", lambda: pax.EMA(jnp.zeros(3, jnp.int32), 0.9), ValueError,
       "allow_int=True"),
      ("rng_seed", lambda: pax.RngSeq(seed="0"), TypeError, "seed"),
  )
  def test_bad_constructor_argument(self, make, error, pattern):
    with self.assertRaisesRegex(error, pattern):
      make()


class LayerBehaviourTest(parameterized.TestCase):

  def test_sequential_says_which_layer_failed(self):
    inner = pax.Sequential(pax.Linear(4, 4), jax.nn.relu, pax.Linear(5, 2))
    net = pax.Sequential(pax.Linear(3, 4), inner)
    with self.assertRaisesRegex(ValueError, r"expects inputs of shape "
                                r"\(\.\.\., 5\), got \(2, 4\)") as ctx:
      net(_x(2, 3))
    self.assertEqual(ctx.exception.__notes__, [
        "  in layer 2 of Sequential with 3 layers: Linear(in_dim=5, "
        "out_dim=2, with_bias=True)",
        "  in layer 1 of Sequential with 2 layers: Sequential"])

  def test_identical_layers_share_treedef(self):
    a, b = pax.Conv2D(4, 3, 3), pax.Conv2D(4, 3, 3)
    self.assertEqual(jax.tree_util.tree_structure(a),
                     jax.tree_util.tree_structure(b))

  def test_nested_layers_use_haiku_names_under_parent(self):
    net = pax.Sequential(pax.Conv2D(4, 3, 3), pax.BatchNorm2D(3),
                         pax.Conv2D(3, 3, 3))
    self.assertEqual(sorted(net.params), [
        "sequential/~/batch_norm", "sequential/~/conv2_d",
        "sequential/~/conv2_d_1"])
    self.assertEqual(sorted(net.state), [
        "sequential/~/batch_norm/~/mean_ema",
        "sequential/~/batch_norm/~/var_ema"])

  def test_dropout_eval_needs_no_key(self):
    drop = pax.Dropout(0.5).eval()
    x = _x(2, 3)
    np.testing.assert_array_equal(drop(x), x)

  def test_rng_seq_keys_are_fresh_and_reproducible(self):
    seq = pax.RngSeq(seed=1)
    seq, k1 = pax.purecall(seq, 1)
    seq, k2 = pax.purecall(seq, 1)
    self.assertFalse(bool(jnp.all(k1 == k2)))
    _, again = pax.purecall(pax.RngSeq(seed=1), 1)
    np.testing.assert_array_equal(k1, again)
    seq2 = pax.RngSeq(rng_key=jax.random.PRNGKey(1))
    np.testing.assert_array_equal(seq2.rng_key, jax.random.PRNGKey(1))

  def test_ema_debias_and_pytrees(self):
    init = {"a": jnp.zeros(2), "b": jnp.ones(())}
    ema = pax.EMA(init, 0.5, debias=True)
    ema, avg = pax.purecall(ema, {"a": jnp.ones(2), "b": jnp.zeros(())})
    _assert_close(avg, {"a": jnp.ones(2), "b": jnp.zeros(())})
    ema, avg = pax.purecall(ema, {"a": jnp.zeros(2), "b": jnp.ones(())})
    # PAX's debias (the first update replaces the initial value): the values
    # real PAX 0.5.9 computes.
    _assert_close(avg, {"a": jnp.full((2,), 0.5), "b": jnp.asarray(0.5)})
    _assert_close(ema.averages, avg)
    with self.assertRaisesRegex(ValueError, "structure"):
      pax.purecall(ema, jnp.zeros(2))
    # Haiku's zero debiasing instead: (0.5 * 0.5 * 1 + 0.5 * 0) / (1 - 0.25).
    ema = pax.EMA(init, 0.5, zero_debias=True)
    ema, _ = pax.purecall(ema, {"a": jnp.ones(2), "b": jnp.zeros(())})
    _, avg = pax.purecall(ema, {"a": jnp.zeros(2), "b": jnp.ones(())})
    _assert_close(avg["a"], jnp.full((2,), 0.25 / 0.75))

  def test_ema_debias_is_haiku_warmup(self):
    ema = pax.EMA(_x(3, seed=3), 0.9, debias=True)
    f = hk.transform_with_state(lambda x: hk.ExponentialMovingAverage(
        0.9, zero_debias=False, warmup_length=1)(x))
    state = ema.state
    for seed in (1, 2, 3):
      x = _x(3, seed=seed)
      ema, avg = pax.purecall(ema, x)
      ref, state = f.apply({}, state, None, x)
      _assert_close(avg, ref, rtol=0)
      _assert_close(ema.state, state, rtol=0)

  def test_ema_pax_debias_attribute(self):
    # PAX tests/test_utils.py::test_ema_debias / test_ema_bias (values of
    # real PAX 0.5.9).
    ema = pax.EMA(jnp.array(1.0), 0.9, True)
    self.assertEqual(ema.debias.item(), 0.0)
    self.assertEqual(ema.averages.item(), 1.0)
    ema, _ = pax.purecall(ema, jnp.array(2.0))
    self.assertEqual((ema.averages.item(), ema.debias.item()), (2.0, 1.0))
    ema, _ = pax.purecall(ema, jnp.array(1.0))
    np.testing.assert_allclose(ema.averages, 0.9 * 2.0 + 0.1 * 1.0, rtol=1e-6)
    ema = pax.EMA(jnp.array(1.0), 0.9, False)
    self.assertIsNone(ema.debias)
    ema, _ = pax.purecall(ema, jnp.array(2.0))
    np.testing.assert_allclose(ema.averages, 0.1 * 2.0 + 0.9 * 1.0, rtol=1e-6)

  def test_ema_allow_int(self):
    # PAX: integer/bool leaves need allow_int=True and follow the newest
    # value (real PAX 0.5.9 gives these outputs).
    init = (jnp.ones(3, jnp.int16), jnp.ones(3, jnp.float16), jnp.ones(2) == 0)
    with self.assertRaisesRegex(ValueError, "allow_int=True"):
      pax.EMA(init, 0.9)
    ema = pax.EMA(init, 0.9, allow_int=True)
    new = (jnp.full(3, 5, jnp.int16), jnp.zeros(3, jnp.float16),
           jnp.ones(2) == 1)
    ema, out = pax.purecall(ema, new)
    self.assertEqual([o.dtype for o in out],
                     [jnp.int16, jnp.float16, jnp.bool_])
    np.testing.assert_array_equal(out[0], new[0])
    np.testing.assert_array_equal(out[2], new[2])
    np.testing.assert_allclose(out[1], 0.9, rtol=1e-3)
    chex.assert_trees_all_equal(ema.averages, out)
    chex.assert_trees_all_equal(ema.eval()(init), out)  # Eval: no update.
    float_only = pax.EMA(jnp.zeros(3), 0.9)
    with self.assertRaisesRegex(ValueError, "allow_int=True"):
      pax.purecall(float_only, jnp.zeros(3, jnp.int32))

  def test_dropout_rate_error_is_also_pax_assertion(self):
    # PAX asserts `0 <= dropout_rate < 1`; PAX code catches AssertionError.
    for rate in (1.0, -0.1):
      with self.assertRaises(AssertionError):
        pax.Dropout(rate)
      with self.assertRaisesRegex(ValueError, "dropout_rate"):
        pax.Dropout(rate)
    drop = pax.Dropout(0.9)  # PAX's rate: the probability of dropping.
    x = jnp.ones((1, 2, 50))
    drop, y = pax.purecall(drop, x)
    self.assertGreater(int(jnp.sum(y == 0)), 80)
    self.assertEqual(float(jnp.max(y)), 10.0)

  def test_rng_seq_pax_internals(self):
    # PAX tests/test_utils.py::test_Rng_Seq: `_rng_key`, and the key
    # advances in eval mode too.
    seq = pax.RngSeq(seed=42)
    self.assertEqual(seq._rng_key.tolist(), [0, 42])  # pylint: disable=protected-access
    seq = seq.eval()
    seq, k1 = pax.module_and_value(seq.next_rng_key)()
    seq2, k2 = pax.module_and_value(seq.next_rng_key)()
    self.assertNotEqual(k1.tolist(), k2.tolist())
    self.assertNotEqual(seq._rng_key.tolist(), seq2._rng_key.tolist())  # pylint: disable=protected-access
    self.assertFalse(seq2.training)
    # An eval-mode key equals the training-mode one (same Haiku sequence).
    _, k_train = pax.module_and_value(pax.RngSeq(seed=42).next_rng_key)()
    _, k_eval = pax.module_and_value(
        pax.RngSeq(seed=42).eval().next_rng_key)()
    np.testing.assert_array_equal(k_train, k_eval)
    with self.assertRaisesRegex(ValueError, "module_and_value"):
      seq.next_rng_key()

  @parameterized.named_parameters(("1d", pax.BatchNorm1D, (2, 5, 3), 3),
                                  ("2d", pax.BatchNorm2D, (2, 4, 4, 3), 4))
  def test_batch_norm_pax_ema_views(self, cls, shape, rank):
    bn = cls(3, True, True, 0.9)
    self.assertEqual(bn.ema_mean.averages.shape, (1,) * (rank - 1) + (3,))
    self.assertEqual(bn.ema_var.decay_rate, 0.9)
    x = _x(*shape)
    bn, _ = pax.purecall(bn, x)
    axes = tuple(range(rank - 1))
    # One update of a zero-debiased average: exactly the batch statistics.
    _assert_close(bn.ema_mean.averages, jnp.mean(x, axes, keepdims=True),
                  atol=1e-6)
    _assert_close(bn.ema_var.averages, jnp.var(x, axes, keepdims=True),
                  atol=1e-5)
    self.assertIs(bn.ema_mean.averages, bn.mean_ema_average)
    self.assertEqual(int(bn.ema_var.counter), 1)
    with self.assertRaises(AttributeError):
      bn.ema_mean.averages = None  # A read-only view.


def _pax_normal(key, shape, dtype=jnp.float32):
  return jax.random.normal(key, shape, dtype) * 0.5


def _pax_two_args(rng_key, shape):  # PAX's own call: `init(key, shape)`.
  return jax.random.uniform(rng_key, shape)


def _via_haiku(pax_init, pass_dtype):
  """The Haiku initializer equivalent to a PAX-form `init(key, shape, ...)`."""
  def init(shape, dtype):
    args = (dtype,) if pass_dtype else ()
    return jnp.asarray(pax_init(hk.next_rng_key(), tuple(shape), *args), dtype)
  return init


class InitializerFormTest(parameterized.TestCase):
  """Initializers in PAX's `init(rng_key, shape, dtype)` or Haiku's form."""

  @parameterized.named_parameters(
      ("jax_normal", jax.nn.initializers.normal(), True),
      ("jax_uniform", jax.nn.initializers.uniform(), True),
      ("pax_function", _pax_normal, True),
      ("pax_two_args", _pax_two_args, False),
      ("pax_lambda", lambda key, shape, dtype: jax.random.normal(key, shape),
       True),
      ("three_required", lambda a, b, c: jax.random.normal(a, b, c), True),
  )
  def test_pax_form_equals_haiku_wrapping(self, init, pass_dtype):
    x = _x(2, 5)
    fc = pax.Linear(5, 7, w_init=init, b_init=init, rng_key=KEY)
    ref = hk.transform(lambda x: hk.Linear(
        7, w_init=_via_haiku(init, pass_dtype),
        b_init=_via_haiku(init, pass_dtype))(x)).init(KEY, x)
    _assert_close(fc.params, ref, rtol=0)
    _assert_close(fc(x), x @ fc.weight + fc.bias)
    self.assertFalse(bool(jnp.all(fc.bias == 0)))

  @parameterized.named_parameters(
      ("hk_object", hk.initializers.RandomNormal(0.5)),
      ("hk_constant", hk.initializers.Constant(0.5)),
      ("shape_dtype_lambda", lambda shape, dtype: jnp.full(shape, 2.0, dtype)),
      ("short_names", lambda s, d: jnp.ones(s, d)),
      ("jnp_ones", jnp.ones),
  )
  def test_haiku_form_is_passed_through(self, init):
    x = _x(2, 5)
    fc = pax.Linear(5, 7, w_init=init, b_init=init, rng_key=KEY)
    ref = hk.transform(lambda x: hk.Linear(7, w_init=init, b_init=init)(x)
                       ).init(KEY, x)
    _assert_close(fc.params, ref, rtol=0)

  @parameterized.named_parameters(
      ("conv2d", lambda i: pax.Conv2D(3, 4, 3, w_init=i, b_init=i)),
      ("conv1d_transpose",
       lambda i: pax.Conv1DTranspose(3, 4, 3, w_init=i, b_init=i)),
      ("layer_norm",
       lambda i: pax.LayerNorm(3, -1, True, True, scale_init=i,
                               offset_init=i)),
      ("group_norm", lambda i: pax.GroupNorm(2, 4, scale_init=i,
                                             offset_init=i)),
      ("batch_norm", lambda i: pax.BatchNorm2D(3, scale_init=i,
                                               offset_init=i)),
      ("embed", lambda i: pax.Embed(10, 4, w_init=i)),
      ("gru", lambda i: pax.GRU(3, 4, w_i_init=i, w_h_init=i, b_init=i)),
      ("mha", lambda i: pax.MultiHeadAttention(2, 2, w_init=i, b_init=i)),
      ("mlp", lambda i: pax.nets.MLP(3, [4], w_init=i, b_init=i)),
  )
  def test_every_layer_accepts_pax_form(self, make):
    layer = make(jax.nn.initializers.constant(0.25))
    for leaf in jax.tree_util.tree_leaves(layer.params):
      np.testing.assert_array_equal(leaf, 0.25)

  @parameterized.named_parameters(
      ("one_arg", lambda shape: jnp.ones(shape), "neither"),
      ("key_only", lambda rng_key: rng_key, "neither"),
      ("four_args", lambda a, b, c, d: a, "neither"),
      ("not_callable", 0.5, "initializer function"),
  )
  def test_neither_form_is_a_clear_error(self, init, pattern):
    with self.assertRaisesRegex(TypeError, pattern):
      pax.Linear(5, 7, b_init=init)

  def test_same_initializer_shares_treedef(self):
    init = jax.nn.initializers.normal()
    self.assertEqual(
        jax.tree_util.tree_structure(pax.Linear(3, 4, b_init=init)),
        jax.tree_util.tree_structure(pax.Linear(3, 4, b_init=init)))

  def test_mha_accepts_w_init(self):
    mha = pax.MultiHeadAttention(
        2, 2, w_init=hk.initializers.Constant(0.5), model_size=6)
    self.assertEqual(mha.output_weight.shape, (4, 6))
    np.testing.assert_array_equal(mha.query_weight, 0.5)

  def test_group_norm_channels_first(self):
    norm = pax.GroupNorm(2, 4, data_format="channels_first")
    x = _x(2, 4, 3, 3)
    out = hk.transform(lambda x: hk.GroupNorm(
        2, data_format="channels_first")(x)).apply(norm.params, None, x)
    _assert_close(norm(x), out)


if __name__ == "__main__":
  quick_exit.main()
