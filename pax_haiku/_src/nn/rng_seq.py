"""`pax.RngSeq`: a module holding a PRNG key that hands out fresh keys.

It runs Haiku's `hk.next_rng_key()` / `hk.next_rng_keys(n)` through the
bridge, which keeps the key as state (attribute `rng_key`) and advances it
on every call, so `next_rng_key` runs inside `pax.pure`/`pax.purecall`.
"""

from typing import Any, List, Optional, Union

import haiku as hk
import jax
import numpy as np

from pax_haiku._src import context
from pax_haiku._src import haiku_bridge
from pax_haiku._src.nn import _checks


class _NextKeys:
  """The Haiku function of `RngSeq`: `n -> hk.next_rng_key(s)`."""

  __name__ = "rng_seq"

  def __call__(self, num_keys: int = 1) -> Any:
    if num_keys == 1:
      return hk.next_rng_key()
    return list(hk.next_rng_keys(num_keys))

  def __eq__(self, other: Any) -> bool:
    return isinstance(other, _NextKeys)

  def __hash__(self) -> int:
    return hash(_NextKeys)

  def __repr__(self) -> str:
    return "rng_seq"


class RngSeq(haiku_bridge.HaikuModule):
  """An endless sequence of PRNG keys.

  >>> seq = pax.RngSeq(seed=42)
  >>> @pax.pure
  ... def two_keys(seq):
  ...     k1 = seq.next_rng_key()
  ...     k2, k3 = seq.next_rng_key(2)
  ...     return seq, (k1, k2, k3)
  >>> seq, (k1, k2, k3) = two_keys(seq)
  >>> k1.shape, bool((k1 == k2).all())
  ((2,), False)

  Args:
    seed: an integer seed.
    rng_key: a PRNG key (takes priority over `seed`); default:
      `pax.next_rng_key()`.
    name: module name.
  """

  def __init__(self, seed: Optional[int] = None,
               rng_key: Optional[jax.Array] = None, *,
               name: Optional[str] = None):
    super().__init__(name=name)
    if rng_key is None:
      if seed is None:
        rng_key = context.next_rng_key()
      else:
        if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
          raise TypeError(
              f"pax.RngSeq: seed must be an int, got {type(seed).__name__}.\n"
              "Fix: pax.RngSeq(seed=42) or pax.RngSeq(rng_key=key).")
        rng_key = jax.random.PRNGKey(int(seed))
    self._init_haiku(_NextKeys(), (1,), {}, rng_key)
    setattr(self, haiku_bridge.RNG_NAME, rng_key)  # The sequence's own key.

  @property
  def _rng_key(self) -> jax.Array:
    """PAX's name of the held key (read-only; the field is `rng_key`)."""
    return self.__dict__[haiku_bridge.RNG_NAME]

  def next_rng_key(self, num_keys: int = 1
                   ) -> Union[jax.Array, List[jax.Array]]:
    """Returns a new key (`num_keys == 1`) or a list of `num_keys` keys.

    Advances the held key (in eval mode too, as in PAX), so it runs inside
    `pax.pure`/`pax.purecall`.

    Args:
      num_keys: how many keys.

    Returns:
      A key, or a list of keys when `num_keys > 1`.
    """
    _checks.positive_int("RngSeq", "num_keys", num_keys,
                         "seq.next_rng_key(2)")
    if self.training:
      return super().__call__(num_keys)
    # PAX advances the key in eval mode too (a sequence never repeats), where
    # the bridge keeps calls pure: advance it here as a training call would.
    if not context.is_mutable(self):
      raise ValueError(
          f"`{self!r}.next_rng_key()` advances its key, but the module is "
          "immutable here.\nFix: `seq, key = pax.module_and_value("
          "seq.next_rng_key)()` (or call it inside a `pax.pure` function).")
    next_key, rng = jax.random.split(self.__dict__[haiku_bridge.RNG_NAME])
    transformed = haiku_bridge._transformed(self._haiku_spec.fn)  # pylint: disable=protected-access
    keys, _ = transformed.apply({}, {}, rng, num_keys)
    setattr(self, haiku_bridge.RNG_NAME, next_key)
    return keys

  def __call__(self, num_keys: int = 1) -> Union[jax.Array, List[jax.Array]]:
    """Same as `next_rng_key`."""
    return self.next_rng_key(num_keys)
