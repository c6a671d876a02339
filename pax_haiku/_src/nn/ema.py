"""`pax.EMA`: exponential moving averages of a pytree, `hk.ExponentialMovingAverage`.

One `hk.ExponentialMovingAverage` per float leaf of the averaged pytree
(Haiku names `exponential_moving_average`, `exponential_moving_average_1`,
... in `jax.tree_util` leaf order); its `hidden`/`average`/`counter` are the
module's state. PAX's `debias=True` ("ignore the initial value": the first
update replaces it) is Haiku's `warmup_length=1`; Haiku's own bias correction
is `zero_debias=True`. With `allow_int=True`, integer and bool leaves are
not averaged but replaced by the newest value (PAX's rule), held as the state
`average` of a `_LatestValue` module named like the averages. In training mode
`ema(xs)` updates and returns the averages (inside `pax.purecall`/`pax.pure`);
in eval mode it returns them unchanged.
"""

from typing import Any, Dict, Optional

import haiku as hk
import jax
import jax.numpy as jnp

from pax_haiku._src import haiku_bridge
from pax_haiku._src.nn import _checks


def _is_float(x: Any) -> bool:
  return jnp.issubdtype(jnp.result_type(x), jnp.floating)


class _LatestValue(hk.Module):
  """A non-float leaf: its "average" is the newest value (PAX's allow_int)."""

  def __call__(self, x: jax.Array, update_stats: bool) -> jax.Array:
    average = hk.get_state("average", jnp.shape(x), jnp.result_type(x),
                           init=jnp.zeros)
    if update_stats:
      hk.set_state("average", x)
      return x
    return average


class _EMAFn:
  """`xs -> tree_map(hk.ExponentialMovingAverage(...), xs)`."""

  __name__ = "ema"

  def __init__(self, decay_rate: float, debias: bool, zero_debias: bool,
               name: Optional[str]):
    self.decay_rate = decay_rate
    self.debias = debias
    self.zero_debias = zero_debias
    self.name = name

  def __call__(self, xs: Any, update_stats: bool = True) -> Any:
    def average(x):
      if not _is_float(x):
        return _LatestValue(name=self.name or "exponential_moving_average")(
            x, update_stats)
      ema = hk.ExponentialMovingAverage(
          self.decay_rate, zero_debias=self.zero_debias,
          warmup_length=1 if self.debias else 0, name=self.name)
      return ema(x) if update_stats else ema.average

    return jax.tree_util.tree_map(average, xs)

  def __eq__(self, other: Any) -> bool:
    return isinstance(other, _EMAFn) and self._key() == other._key()

  def __hash__(self) -> int:
    return hash(self._key())

  def _key(self):
    return (self.decay_rate, self.debias, self.zero_debias, self.name)

  def __repr__(self) -> str:
    return f"ema({self.decay_rate}, debias={self.debias})"


class EMA(haiku_bridge.HaikuModule):
  """Exponential moving average of a pytree of arrays.

  `average = decay_rate * average + (1 - decay_rate) * x` per leaf, starting
  from `initial_value`. With `debias=True` (PAX's option) the initial value
  is ignored: the first update sets the average to `x` (Haiku's
  `warmup_length=1`). `zero_debias=True` is Haiku's bias correction instead
  (`hidden / (1 - decay_rate ** t)`).

  >>> ema = pax.EMA(jnp.zeros(2), decay_rate=0.9)
  >>> ema, avg = pax.purecall(ema, jnp.ones(2))
  >>> [round(float(a), 4) for a in avg]
  [0.1, 0.1]
  >>> bool((ema.eval()(jnp.ones(2)) == avg).all())  # Eval: no update.
  True
  >>> ema = pax.EMA(jnp.array(1.0), 0.9, debias=True)
  >>> ema, avg = pax.purecall(ema, jnp.array(2.0))  # Initial value ignored.
  >>> float(avg), float(ema.debias)
  (2.0, 1.0)
  >>> ema, avg = pax.purecall(ema, jnp.array(1.0))
  >>> round(float(avg), 4)
  1.9

  Args:
    initial_value: a pytree of arrays: the initial averages (and the
      structure, shapes and dtypes of the values to average).
    decay_rate: the decay, in [0, 1).
    debias: ignore the initial value (PAX's `debias`).
    allow_int: allow integer/bool leaves, which are replaced by the newest
      value instead of averaged (PAX's `allow_int`).
    zero_debias: Haiku's zero debiasing of the averages.
    name: Haiku module name of the averages (default
      `exponential_moving_average`, numbered per leaf).
  """

  decay_rate: float
  allow_int: bool
  zero_debias: bool

  def __init__(self, initial_value: Any, decay_rate: float,
               debias: bool = False, allow_int: bool = False, *,
               zero_debias: bool = False, name: Optional[str] = None):
    super().__init__(name=name)
    self.decay_rate = _checks.rate("EMA", "decay_rate", decay_rate,
                                   "pax.EMA(params, decay_rate=0.99)")
    self._debias = bool(debias)
    self.allow_int = bool(allow_int)
    self.zero_debias = bool(zero_debias)
    if self._debias and self.zero_debias:
      raise ValueError(
          "pax.EMA: debias=True (PAX's: the first value replaces the initial "
          "one) and zero_debias=True (Haiku's bias correction) exclude each "
          "other.\nFix: pass one of them.")
    leaves, treedef = jax.tree_util.tree_flatten(initial_value)
    if not leaves:
      raise ValueError("pax.EMA: initial_value has no arrays to average.")
    self._check_int_leaves(leaves, "initial_value")
    self._treedef = treedef
    init = [jnp.asarray(x) for x in leaves]
    fn = _EMAFn(self.decay_rate, self._debias, self.zero_debias, name)
    self._init_haiku(fn, (treedef.unflatten(init),), {"update_stats": True},
                     None)
    # `init` ran one update; start instead from the initial value (or, when
    # zero-debiasing, from Haiku's zeros) with Haiku's initial counter.
    warmup = 1 if self._debias else 0
    for i, x in enumerate(init):
      prefix = self._prefix(i)
      if _is_float(x):
        counter = prefix + "counter"
        setattr(self, counter,
                jnp.full_like(self.__dict__[counter], -warmup))
        setattr(self, prefix + "hidden",
                jnp.zeros_like(x) if self.zero_debias else x)
      setattr(self, prefix + "average", x)

  def _check_int_leaves(self, leaves: Any, what: str) -> None:
    if self.allow_int:
      return
    for leaf in leaves:
      if not _is_float(leaf):
        raise ValueError(
            f"pax.EMA averages float arrays, but {what} has a leaf of dtype "
            f"{jnp.result_type(leaf)}.\nFix: pass `allow_int=True` (integer "
            "and bool leaves then follow the newest value, as in PAX), or "
            "cast them, e.g. `jax.tree_util.tree_map(lambda x: "
            "x.astype(jnp.float32), v)`.")

  def _prefix(self, i: int) -> str:
    return "" if self._treedef.num_leaves == 1 else f"leaf_{i}_"

  def _haiku_attr_name(self, bundle: str, name: str, role: str) -> str:
    if self._treedef.num_leaves == 1:
      return name
    suffix = bundle.rsplit("_", 1)[-1]
    index = int(suffix) if suffix.isdigit() else 0
    return f"{self._prefix(index)}{name}"

  @property
  def averages(self) -> Any:
    """The current averages (a pytree like `initial_value`)."""
    return self._treedef.unflatten(
        [self.__dict__[self._prefix(i) + "average"]
         for i in range(self._treedef.num_leaves)])

  @property
  def debias(self) -> Optional[jax.Array]:
    """PAX's view: None without `debias`, else 0.0 before the first update
    and 1.0 after it (read from the Haiku counter)."""
    if not self._debias:
      return None
    for i in range(self._treedef.num_leaves):
      counter = self.__dict__.get(self._prefix(i) + "counter")
      if counter is not None:
        return (counter >= 0).astype(jnp.float32)  # Starts at -1.
    return jnp.asarray(0.0, jnp.float32)  # Only non-float leaves.

  def __call__(self, xs: Any) -> Any:
    """Updates the averages with `xs` (training mode) and returns them."""
    treedef = jax.tree_util.tree_structure(xs)
    if treedef != self._treedef:
      raise ValueError(
          f"{self!r}: the value has structure {treedef} but the averages have "
          f"{self._treedef}.\nFix: pass values shaped like `initial_value`.")
    self._check_int_leaves(jax.tree_util.tree_leaves(xs), "the new value")
    for x, a in zip(jax.tree_util.tree_leaves(xs),
                    jax.tree_util.tree_leaves(self.averages)):
      if jnp.shape(x) != jnp.shape(a):
        raise ValueError(
            f"{self!r}: a value of shape {tuple(jnp.shape(x))} cannot update "
            f"an average of shape {tuple(jnp.shape(a))}.\nFix: pass values "
            "shaped like `initial_value`.")
    return super().__call__(xs, update_stats=self.training)

  def _repr_info(self) -> Dict[str, Any]:
    info = {"decay_rate": self.decay_rate, "debias": self._debias}
    if self.allow_int:
      info["allow_int"] = True
    if self.zero_debias:
      info["zero_debias"] = True
    return info
