"""Recurrent cores `pax.VanillaRNN`, `pax.LSTM`, `pax.GRU` (Haiku-backed).

PAX's call convention: `core(state, x) -> (state, h)`, one time step, so a
sequence is `pax.scan(core, core.initial_state(batch_size), xs)`. The state
is PAX's named tuple (`LSTMState(hidden, cell)` -- Haiku's `hk.LSTMState` --,
`GRUState(hidden)`, `VanillaRNNState(hidden)`) holding the Haiku core's
state, and `initial_state(batch_size)` is the Haiku core's `initial_state`,
so a pax core and `hk.dynamic_unroll` of the Haiku core agree exactly for the
same parameters. GRU and VanillaRNN also take Haiku's bare hidden array as
the state (and then return one), so Haiku-style loops work unchanged.
"""

from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple

import haiku as hk
import jax
import jax.numpy as jnp

from pax_haiku._src import haiku_bridge
from pax_haiku._src.nn import _checks

LSTMState = hk.LSTMState


class GRUState(NamedTuple):
  """The state of `pax.GRU` (PAX's): the hidden array."""
  hidden: jax.Array


class VanillaRNNState(NamedTuple):
  """The state of `pax.VanillaRNN` (PAX's): the hidden array."""
  hidden: jax.Array


class _StepCall(haiku_bridge.HaikuModuleCall):
  """`lambda state, x: swap(cls(*ctor)(x, state))`: Haiku's `(x, state) ->
  (h, state)` in PAX's `(state, x) -> (state, h)` order."""

  def __call__(self, state: Any, x: jax.Array) -> Tuple[Any, jax.Array]:
    core = self.cls(*self.ctor_args, **self.ctor_kwargs)
    h, state = core(x, state)
    return state, h

  def _key(self):
    return super()._key() + ("pax_step",)


class RNN(haiku_bridge.HaikuModule):
  """Base class of the Haiku-backed recurrent cores."""

  _hk_class: Any = None
  # PAX's named tuple around Haiku's bare hidden-array state (None: LSTM,
  # whose Haiku state is already a named tuple).
  _state_type: Any = None

  input_dim: int
  hidden_dim: int

  def _build(self, input_dim: int, hidden_dim: int,
             rng_key: Optional[jax.Array], name: Optional[str],
             **ctor_kwargs: Any) -> None:
    layer = type(self).__name__
    example = f"pax.{layer}(input_dim=8, hidden_dim=32)"
    self.input_dim = _checks.positive_int(layer, "input_dim", input_dim,
                                          example)
    self.hidden_dim = _checks.positive_int(layer, "hidden_dim", hidden_dim,
                                           example)
    fn = _StepCall(self._hk_class, hidden_dim, name=name, **ctor_kwargs)
    self._initial = haiku_bridge.HaikuModuleCall(
        self._hk_class, hidden_dim, name=name, method="initial_state",
        **ctor_kwargs)
    sample = (self.initial_state(1), jnp.zeros((1, input_dim)))
    self._init_haiku(fn, sample, {}, rng_key)

  def initial_state(self, batch_size: Optional[int]) -> Any:
    """The Haiku core's initial state (zeros) for `batch_size` sequences.

    Args:
      batch_size: the batch size, or None for an unbatched state.

    Returns:
      The state: `LSTMState` (LSTM), `GRUState` (GRU) or `VanillaRNNState`.
    """
    if batch_size is not None:
      _checks.positive_int(type(self).__name__, "batch_size", batch_size,
                           "core.initial_state(32)")
    transformed = haiku_bridge._transformed(self._initial)  # pylint: disable=protected-access
    state, _ = transformed.apply({}, {}, None, batch_size)
    if self._state_type is not None:
      return self._state_type(state)
    return state

  def __call__(self, state: Any, x: jax.Array) -> Tuple[Any, jax.Array]:
    """One step: returns `(new_state, h)`."""
    shape = jnp.shape(x)
    if not shape or shape[-1] != self.input_dim:
      raise _checks.input_error(
          self, f"(batch, {self.input_dim})", x,
          "call `core(state, x)` with x of size input_dim on its last axis "
          "(the state comes first, as in PAX).")
    wrapped = self._state_type is not None and isinstance(
        state, self._state_type)
    if wrapped:
      state = state.hidden
    hidden = state.hidden if isinstance(state, LSTMState) else state
    if jnp.shape(hidden)[-1:] != (self.hidden_dim,) or (
        jnp.shape(hidden)[:-1] != shape[:-1]):
      raise ValueError(
          f"{self!r}: the state does not fit the input: its hidden part has "
          f"shape {tuple(jnp.shape(hidden))}, expected "
          f"{tuple(shape[:-1]) + (self.hidden_dim,)} for x of shape "
          f"{tuple(shape)}.\nFix: start from "
          "`core.initial_state(batch_size)` and call `core(state, x)`.")
    state, h = super().__call__(state, x)
    if wrapped:
      state = self._state_type(state)
    return state, h

  def _repr_info(self) -> Dict[str, Any]:
    return {"input_dim": self.input_dim, "hidden_dim": self.hidden_dim}


class _VanillaRNNCore(hk.VanillaRNN):
  """`hk.VanillaRNN` with another activation than relu (same parameters)."""

  def __init__(self, hidden_size: int, double_bias: bool = True,
               activation: Callable[[jax.Array], jax.Array] = jax.nn.relu,
               name: Optional[str] = None):
    super().__init__(hidden_size, double_bias=double_bias,
                     name=name or "vanilla_rnn")
    self.activation = activation

  def __call__(self, inputs, prev_state):
    inputs = jnp.asarray(inputs)
    prev_state = jnp.asarray(prev_state)
    input_to_hidden = hk.Linear(self.hidden_size)
    hidden_to_hidden = hk.Linear(self.hidden_size, with_bias=self.double_bias)
    out = self.activation(input_to_hidden(inputs) +
                          hidden_to_hidden(prev_state))
    return out, out


class VanillaRNN(RNN):
  """A simple RNN core (`hk.VanillaRNN`): `h = relu(W_i x + b_i + W_h h + b_h)`.

  The activation is Haiku's relu by default; PAX's VanillaRNN uses tanh over
  a single bias (`activation=jnp.tanh, double_bias=False` reproduces it).

  >>> rnn = pax.VanillaRNN(3, 4)
  >>> state = rnn.initial_state(2)
  >>> state, h = rnn(state, jnp.ones((2, 3)))
  >>> h.shape, sorted(rnn.params)
  ((2, 4), ['vanilla_rnn/linear', 'vanilla_rnn/linear_1'])

  Args:
    input_dim: input size.
    hidden_dim: number of hidden units.
    double_bias: give the hidden-to-hidden projection a bias too (Haiku's
      default).
    activation: the nonlinearity (Haiku's `jax.nn.relu` by default; PAX's
      VanillaRNN uses `jnp.tanh`). Parameters are the same for any choice.
    rng_key: key for initialization (default: `pax.next_rng_key()`).
    name: Haiku module name (default `vanilla_rnn`).
  """

  _hk_class = hk.VanillaRNN
  _state_type = VanillaRNNState

  def __init__(self, input_dim: int, hidden_dim: int, *,
               double_bias: bool = True,
               activation: Callable[[jax.Array], jax.Array] = jax.nn.relu,
               rng_key: Optional[jax.Array] = None,
               name: Optional[str] = None):
    super().__init__(name=name)
    if not callable(activation):
      raise TypeError(f"pax.VanillaRNN: activation must be callable, got "
                      f"{activation!r}.\nFix: e.g. activation=jnp.tanh.")
    if activation is not jax.nn.relu:
      self._hk_class = _VanillaRNNCore
      self._build(input_dim, hidden_dim, rng_key, name,
                  double_bias=bool(double_bias), activation=activation)
    else:  # Exactly Haiku's core.
      self._build(input_dim, hidden_dim, rng_key, name,
                  double_bias=bool(double_bias))

  def _haiku_attr_name(self, bundle: str, name: str, role: str) -> str:
    part = "hidden" if bundle.endswith("_1") else "input"
    return f"{part}_{_checks.leaf_rename(name)}"


class LSTM(RNN):
  """A Long Short-Term Memory core (`hk.LSTM`); state `hk.LSTMState`.

  As in Haiku, 1 is added to the forget gate's pre-activation.

  >>> lstm = pax.LSTM(3, 4)
  >>> state = lstm.initial_state(2)
  >>> type(state).__name__, state.hidden.shape
  ('LSTMState', (2, 4))
  >>> state, h = lstm(state, jnp.ones((2, 3)))
  >>> h.shape, lstm.weight.shape
  ((2, 4), (7, 16))

  Args:
    input_dim: input size.
    hidden_dim: number of LSTM cells.
    rng_key: key for initialization (default: `pax.next_rng_key()`).
    name: Haiku module name (default `lstm`).
  """

  _hk_class = hk.LSTM

  def __init__(self, input_dim: int, hidden_dim: int, *,
               rng_key: Optional[jax.Array] = None,
               name: Optional[str] = None):
    super().__init__(name=name)
    self._build(input_dim, hidden_dim, rng_key, name)

  def _haiku_attr_name(self, bundle: str, name: str, role: str) -> str:
    return _checks.leaf_rename(name)


class GRU(RNN):
  """A gated recurrent unit core (`hk.GRU`); the state is a `GRUState`.

  >>> gru = pax.GRU(3, 4)
  >>> state, h = gru(gru.initial_state(2), jnp.ones((2, 3)))
  >>> type(state).__name__, state.hidden.shape
  ('GRUState', (2, 4))
  >>> h.shape, sorted(gru.params["gru"])
  ((2, 4), ['b', 'w_h', 'w_i'])

  Args:
    input_dim: input size.
    hidden_dim: number of GRU cells.
    w_i_init: initializer of the input weights.
    w_h_init: initializer of the hidden weights.
    b_init: initializer of the biases.
    rng_key: key for initialization (default: `pax.next_rng_key()`).
    name: Haiku module name (default `gru`).
  """

  _hk_class = hk.GRU
  _state_type = GRUState

  def __init__(self, input_dim: int, hidden_dim: int,
               w_i_init: Optional[Callable[..., Any]] = None,
               w_h_init: Optional[Callable[..., Any]] = None,
               b_init: Optional[Callable[..., Any]] = None, *,
               rng_key: Optional[jax.Array] = None,
               name: Optional[str] = None):
    super().__init__(name=name)
    w_i_init, w_h_init, b_init = _checks.initializers(
        "GRU", w_i_init=w_i_init, w_h_init=w_h_init, b_init=b_init)
    self._build(input_dim, hidden_dim, rng_key, name, w_i_init=w_i_init,
                w_h_init=w_h_init, b_init=b_init)

  def _haiku_attr_name(self, bundle: str, name: str, role: str) -> str:
    return {"w_i": "input_weight", "w_h": "hidden_weight",
            "b": "bias"}[name]
