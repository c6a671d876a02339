"""`pax.dropout` (`hk.dropout`) and the `pax.Dropout` module.

`pax.Dropout` runs `hk.dropout(hk.next_rng_key(), rate, x)` through the
Haiku bridge, which holds the RNG key as state (attribute `rng_key`) and
advances it on every training-mode call, so calls in training mode go
through `pax.purecall`/`pax.pure`. In eval mode the input is returned as is.
"""

from typing import Any, Dict, Optional, Sequence

import haiku as hk
import jax
import jax.numpy as jnp

from pax_haiku._src import haiku_bridge
from pax_haiku._src.nn import _checks


def dropout(rng_key: jax.Array, dropout_rate: float, x: jax.Array,
            broadcast_dims: Sequence[int] = ()) -> jax.Array:
  """Zeroes each entry of `x` with probability `dropout_rate` (`hk.dropout`).

  Kept entries are scaled by `1 / (1 - dropout_rate)`, so `E[out] = x`.

  >>> y = pax.dropout(jax.random.PRNGKey(0), 0.5, jnp.ones((1000,)))
  >>> sorted(set(np.asarray(y).tolist()))
  [0.0, 2.0]

  Args:
    rng_key: a PRNG key.
    dropout_rate: probability of dropping an entry, in [0, 1).
    x: the input.
    broadcast_dims: axes along which the same mask is used.

  Returns:
    `x` with entries dropped.
  """
  _checks.rate("dropout", "dropout_rate", dropout_rate,
               "pax.dropout(key, 0.1, x)")
  return hk.dropout(rng_key, dropout_rate, x, tuple(broadcast_dims))


class _DropoutFn:
  """The Haiku function of `pax.Dropout` (value-equal, so hashable)."""

  __name__ = "dropout"

  def __init__(self, dropout_rate: float, broadcast_dims: Sequence[int]):
    self.dropout_rate = dropout_rate
    self.broadcast_dims = tuple(broadcast_dims)

  def __call__(self, x: jax.Array, is_training: bool = True) -> jax.Array:
    if is_training and self.dropout_rate > 0:
      return hk.dropout(hk.next_rng_key(), self.dropout_rate, x,
                        self.broadcast_dims)
    return x

  def _key(self):
    return (self.dropout_rate, self.broadcast_dims)

  def __eq__(self, other: Any) -> bool:
    return isinstance(other, _DropoutFn) and self._key() == other._key()

  def __hash__(self) -> int:
    return hash(self._key())

  def __repr__(self) -> str:
    return f"dropout({self.dropout_rate})"


class Dropout(haiku_bridge.HaikuModule):
  """Dropout in training mode, identity in eval mode.

  >>> drop = pax.Dropout(0.5)
  >>> drop, y = pax.purecall(drop, jnp.ones((4, 3)))  # Advances `rng_key`.
  >>> sorted(set(np.asarray(y).ravel().tolist())) in ([0.0, 2.0], [2.0])
  True
  >>> bool((drop.eval()(jnp.ones(3)) == 1.0).all())
  True

  Args:
    dropout_rate: probability of dropping an entry, in [0, 1).
    broadcast_dims: axes along which the same mask is used.
    rng_key: the initial key (default: `pax.next_rng_key()`).
    name: module name.
  """

  dropout_rate: float

  def __init__(self, dropout_rate: float, *,
               broadcast_dims: Sequence[int] = (),
               rng_key: Optional[jax.Array] = None,
               name: Optional[str] = None):
    super().__init__(name=name)
    self.dropout_rate = _checks.rate("Dropout", "dropout_rate", dropout_rate,
                                     "pax.Dropout(0.1)")
    fn = _DropoutFn(self.dropout_rate, broadcast_dims)
    self._init_haiku(fn, (haiku_bridge.sample_input(()),),
                     {"is_training": True}, rng_key)

  def __call__(self, x: jax.Array) -> jax.Array:
    if not self.training or self.dropout_rate == 0:
      return x  # Like Haiku code with is_training=False; no key is used.
    return super().__call__(x)

  def _repr_info(self) -> Dict[str, Any]:
    return {"dropout_rate": self.dropout_rate}
