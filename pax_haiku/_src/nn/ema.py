"""`pax.EMA`: exponential moving averages of a pytree, `hk.ExponentialMovingAverage`.

One `hk.ExponentialMovingAverage` per leaf of the averaged pytree (Haiku
names `exponential_moving_average`, `exponential_moving_average_1`, ... in
`jax.tree_util` leaf order); its `hidden`/`average`/`counter` are the module's
state. In training mode `ema(xs)` updates and returns the averages (inside
`pax.purecall`/`pax.pure`); in eval mode it returns them unchanged.
"""

from typing import Any, Dict, Optional

import haiku as hk
import jax
import jax.numpy as jnp

from pax_haiku._src import haiku_bridge
from pax_haiku._src.nn import _checks


class _EMAFn:
  """`xs -> tree_map(hk.ExponentialMovingAverage(decay, debias), xs)`."""

  __name__ = "ema"

  def __init__(self, decay_rate: float, debias: bool, name: Optional[str]):
    self.decay_rate = decay_rate
    self.debias = debias
    self.name = name

  def __call__(self, xs: Any, update_stats: bool = True) -> Any:
    def average(x):
      ema = hk.ExponentialMovingAverage(self.decay_rate,
                                        zero_debias=self.debias,
                                        name=self.name)
      return ema(x) if update_stats else ema.average

    return jax.tree_util.tree_map(average, xs)

  def __eq__(self, other: Any) -> bool:
    return isinstance(other, _EMAFn) and self._key() == other._key()

  def __hash__(self) -> int:
    return hash(self._key())

  def _key(self):
    return (self.decay_rate, self.debias, self.name)

  def __repr__(self) -> str:
    return f"ema({self.decay_rate}, debias={self.debias})"


class EMA(haiku_bridge.HaikuModule):
  """Exponential moving average of a pytree of float arrays.

  `average = decay_rate * average + (1 - decay_rate) * x` per leaf, starting
  from `initial_value`; with `debias=True` the initial value is ignored (the
  first update returns `x`, Haiku's zero debiasing).

  >>> ema = pax.EMA(jnp.zeros(2), decay_rate=0.9)
  >>> ema, avg = pax.purecall(ema, jnp.ones(2))
  >>> [round(float(a), 4) for a in avg]
  [0.1, 0.1]
  >>> bool((ema.eval()(jnp.ones(2)) == avg).all())  # Eval: no update.
  True
  >>> _, avg = pax.purecall(pax.EMA(jnp.zeros(2), 0.9, debias=True), jnp.ones(2))
  >>> avg
  Array([1., 1.], dtype=float32)

  Args:
    initial_value: a pytree of float arrays: the initial averages (and the
      structure, shapes and dtypes of the values to average).
    decay_rate: the decay, in [0, 1).
    debias: ignore the initial value (Haiku's `zero_debias`).
    name: Haiku module name of the averages (default
      `exponential_moving_average`, numbered per leaf).
  """

  decay_rate: float
  debias: bool

  def __init__(self, initial_value: Any, decay_rate: float,
               debias: bool = False, *, name: Optional[str] = None):
    super().__init__(name=name)
    self.decay_rate = _checks.rate("EMA", "decay_rate", decay_rate,
                                   "pax.EMA(params, decay_rate=0.99)")
    self.debias = bool(debias)
    leaves, treedef = jax.tree_util.tree_flatten(initial_value)
    if not leaves:
      raise ValueError("pax.EMA: initial_value has no arrays to average.")
    for leaf in leaves:
      if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
        raise TypeError(
            f"pax.EMA averages float arrays, but initial_value has a leaf of "
            f"dtype {jnp.result_type(leaf)}.\nFix: cast it, e.g. "
            "`jax.tree_util.tree_map(lambda x: x.astype(jnp.float32), v)`, "
            "or keep integer values out of the averaged tree.")
    self._treedef = treedef
    init = [jnp.asarray(x) for x in leaves]
    fn = _EMAFn(self.decay_rate, self.debias, name)
    self._init_haiku(fn, (treedef.unflatten(init),), {"update_stats": True},
                     None)
    # `init` ran one update; start instead from the initial value (or, when
    # debiasing, from Haiku's zeros) with the counter at 0.
    for attr, _, name, _ in self._haiku_spec.leaves:
      value = self.__dict__[attr]
      if name == "counter":
        setattr(self, attr, jnp.zeros_like(value))
    for i, x in enumerate(init):
      prefix = self._prefix(i)
      setattr(self, prefix + "hidden",
              jnp.zeros_like(x) if self.debias else x)
      setattr(self, prefix + "average", x)

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

  def __call__(self, xs: Any) -> Any:
    """Updates the averages with `xs` (training mode) and returns them."""
    treedef = jax.tree_util.tree_structure(xs)
    if treedef != self._treedef:
      raise ValueError(
          f"{self!r}: the value has structure {treedef} but the averages have "
          f"{self._treedef}.\nFix: pass values shaped like `initial_value`.")
    for x, a in zip(jax.tree_util.tree_leaves(xs),
                    jax.tree_util.tree_leaves(self.averages)):
      if jnp.shape(x) != jnp.shape(a):
        raise ValueError(
            f"{self!r}: a value of shape {tuple(jnp.shape(x))} cannot update "
            f"an average of shape {tuple(jnp.shape(a))}.\nFix: pass values "
            "shaped like `initial_value`.")
    return super().__call__(xs, update_stats=self.training)

  def _repr_info(self) -> Dict[str, Any]:
    return {"decay_rate": self.decay_rate, "debias": self.debias}
