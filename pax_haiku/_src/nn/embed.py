"""`pax.Embed`: `hk.Embed` with PAX's `(vocab_size, embed_dim)` signature."""

from typing import Any, Callable, Dict, Optional

import haiku as hk
import jax
import jax.numpy as jnp

from pax_haiku._src import haiku_bridge
from pax_haiku._src.nn import _checks


class Embed(haiku_bridge.HaikuModule):
  """A lookup table of `vocab_size` vectors (`hk.Embed`, `embed/embeddings`).

  >>> embed = pax.Embed(10, 4)
  >>> embed.weight.shape, sorted(embed.params["embed"])
  ((10, 4), ['embeddings'])
  >>> embed(jnp.array([[1, 2, 3]])).shape
  (1, 3, 4)

  Args:
    vocab_size: number of embedded vectors.
    embed_dim: size of each vector.
    w_init: initializer (Haiku's default: truncated normal, stddev 1).
    lookup_style: Haiku's lookup style, 'ARRAY_INDEX' (default) or
      'ONE_HOT'.
    rng_key: key for initialization (default: `pax.next_rng_key()`).
    name: Haiku module name (default `embed`).
  """

  vocab_size: int
  embed_dim: int

  def __init__(self, vocab_size: int, embed_dim: int,
               w_init: Optional[Callable[..., Any]] = None, *,
               lookup_style: str = "ARRAY_INDEX",
               rng_key: Optional[jax.Array] = None,
               name: Optional[str] = None):
    super().__init__(name=name)
    example = "pax.Embed(vocab_size=1000, embed_dim=64)"
    self.vocab_size = _checks.positive_int("Embed", "vocab_size", vocab_size,
                                           example)
    self.embed_dim = _checks.positive_int("Embed", "embed_dim", embed_dim,
                                          example)
    _checks.one_of("Embed", "lookup_style", lookup_style,
                   ("ARRAY_INDEX", "ONE_HOT"))
    w_init, = _checks.initializers("Embed", w_init=w_init)
    fn = haiku_bridge.HaikuModuleCall(hk.Embed, vocab_size, embed_dim,
                                      w_init=w_init, lookup_style=lookup_style,
                                      name=name)
    self._init_haiku(fn, (haiku_bridge.sample_input((1,), jnp.int32),), {},
                     rng_key)

  def _haiku_attr_name(self, bundle: str, name: str, role: str) -> str:
    return "weight"

  def __call__(self, ids: jax.Array) -> jax.Array:
    """Returns the vectors of the integer `ids` (shape `ids.shape + (D,)`)."""
    if not jnp.issubdtype(jnp.result_type(ids), jnp.integer):
      raise TypeError(
          f"{self!r} expects integer ids, got dtype {jnp.result_type(ids)}.\n"
          "Fix: pass token ids, e.g. `ids.astype(jnp.int32)`.")
    return super().__call__(ids)

  def _repr_info(self) -> Dict[str, Any]:
    return {"vocab_size": self.vocab_size, "embed_dim": self.embed_dim}
