"""`pax.MultiHeadAttention`: `hk.MultiHeadAttention` with PAX's signature."""

from typing import Any, Callable, Dict, Optional

import haiku as hk
import jax
import jax.numpy as jnp

from pax_haiku._src import haiku_bridge
from pax_haiku._src.nn import _checks

_PROJECTIONS = {"query": "query", "key": "key", "value": "value",
                "linear": "output"}


class MultiHeadAttention(haiku_bridge.HaikuModule):
  """Multi-head attention ("Attention is all you need"), `hk.MultiHeadAttention`.

  Queries, keys and values of size `input_dim` (default
  `num_heads * key_size`) are projected to `num_heads` heads; the output has
  size `model_size` (default `num_heads * key_size`). Parameters are Haiku's
  `multi_head_attention/{query,key,value,linear}`, held as `query_weight`,
  `query_bias`, ..., `output_weight`, `output_bias`.

  >>> mha = pax.MultiHeadAttention(num_heads=2, key_size=4, w_init_scale=1.0)
  >>> x = jnp.ones((1, 5, 8))
  >>> mha(x, x, x).shape
  (1, 5, 8)
  >>> causal = jnp.tril(jnp.ones((5, 5), bool))[None, None]
  >>> mha(x, x, x, mask=causal).shape
  (1, 5, 8)

  Args:
    num_heads: number of heads.
    key_size: size of each query/key head.
    w_init_scale: scale of the `VarianceScaling` weight initializer (PAX's
      argument; used when `w_init` is not given, default 1.0).
    w_init: weight initializer (instead of `w_init_scale`).
    with_bias: the projections have biases.
    b_init: bias initializer.
    value_size: size of each value head (default `key_size`).
    model_size: output size (default `num_heads * key_size`).
    input_dim: size of the query/key/value inputs (default
      `num_heads * key_size`).
    rng_key: key for initialization (default: `pax.next_rng_key()`).
    name: Haiku module name (default `multi_head_attention`).
  """

  num_heads: int
  key_size: int
  value_size: int
  model_size: int
  input_dim: int

  def __init__(self, num_heads: int, key_size: int,
               w_init_scale: Optional[float] = None, *,
               w_init: Optional[Callable[..., Any]] = None,
               with_bias: bool = True,
               b_init: Optional[Callable[..., Any]] = None,
               value_size: Optional[int] = None,
               model_size: Optional[int] = None,
               input_dim: Optional[int] = None,
               rng_key: Optional[jax.Array] = None,
               name: Optional[str] = None):
    super().__init__(name=name)
    example = "pax.MultiHeadAttention(num_heads=8, key_size=64, w_init_scale=1.0)"
    pos = lambda arg, v: _checks.positive_int("MultiHeadAttention", arg, v,
                                              example)
    self.num_heads = pos("num_heads", num_heads)
    self.key_size = pos("key_size", key_size)
    self.value_size = pos("value_size",
                          key_size if value_size is None else value_size)
    self.model_size = pos("model_size", num_heads * key_size
                          if model_size is None else model_size)
    self.input_dim = pos("input_dim", num_heads * key_size
                         if input_dim is None else input_dim)
    if w_init is not None and w_init_scale is not None:
      raise ValueError(
          "pax.MultiHeadAttention: pass either w_init or w_init_scale, not "
          "both.")
    w_init, b_init = _checks.initializers(
        "MultiHeadAttention", w_init=w_init, b_init=b_init)
    if w_init is None:
      scale = 1.0 if w_init_scale is None else w_init_scale
      if isinstance(scale, bool) or not isinstance(scale, (int, float)) or (
          scale <= 0):
        raise ValueError(
            "pax.MultiHeadAttention: w_init_scale must be a positive float, "
            f"got {w_init_scale!r}.\nFix: e.g. {example}.")
      # Haiku turns `w_init_scale` into this initializer (and warns that the
      # argument is deprecated); a value-equal one keeps treedefs shareable.
      w_init = _checks.VarianceScaling(float(scale))
    fn = haiku_bridge.HaikuModuleCall(
        hk.MultiHeadAttention, self.num_heads, self.key_size, w_init=w_init,
        with_bias=bool(with_bias), b_init=b_init, value_size=self.value_size,
        model_size=self.model_size, name=name)
    x = haiku_bridge.sample_input((1, 1, self.input_dim))
    self._init_haiku(fn, (x, x, x), {}, rng_key)

  def _haiku_attr_name(self, bundle: str, name: str, role: str) -> str:
    part = _PROJECTIONS[bundle.rsplit("/", 1)[-1]]
    return f"{part}_{_checks.leaf_rename(name)}"

  def __call__(self, query: jax.Array, key: jax.Array, value: jax.Array,
               mask: Optional[jax.Array] = None) -> jax.Array:
    """Attention of `query` `[..., T', D]` over `key`/`value` `[..., T, D]`.

    Args:
      query: queries, shape `[..., T', input_dim]`.
      key: keys, shape `[..., T, input_dim]`.
      value: values, shape `[..., T, input_dim]`.
      mask: optional boolean mask `[..., H or 1, T', T]` (True = attend).

    Returns:
      An array of shape `[..., T', model_size]`.
    """
    for arg, x in (("query", query), ("key", key), ("value", value)):
      if jnp.ndim(x) < 2 or jnp.shape(x)[-1] != self.input_dim:
        raise _checks.input_error(
            self, f"(..., T, {self.input_dim}) for `{arg}`", x,
            "queries, keys and values need input_dim features on the last "
            "axis and a time axis before it.")
    if mask is not None and jnp.ndim(mask) != jnp.ndim(query) + 1:
      raise ValueError(
          f"{self!r}: mask must have shape [..., H or 1, T', T] (rank "
          f"{jnp.ndim(query) + 1} for queries of rank {jnp.ndim(query)}), got "
          f"{tuple(jnp.shape(mask))}.\nFix: e.g. a causal mask "
          "`jnp.tril(jnp.ones((T, T), bool))[None, None]`.")
    return super().__call__(query, key, value, mask)

  def _repr_info(self) -> Dict[str, Any]:
    return {"num_heads": self.num_heads, "key_size": self.key_size}
