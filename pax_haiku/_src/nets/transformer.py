"""`pax.nets.Transformer` / `pax.nets.TransformerLM`: pax modules wrapping the
Haiku reference implementation in `haiku_transformer.py`.

Parameter names are those of the Haiku modules (`transformer/~/...`,
`transformer_lm/~/...`), so parameters created by plain Haiku code with
`pax.nets.haiku_transformer.TransformerLM` load with
`net.update_parameters(params)`. Leaves are held under their Haiku names
below the net's scope (e.g. `token_embed/embeddings`). With
`dropout_rate > 0` the net holds an RNG key (attribute `rng_key`) and a
training-mode call advances it, so it runs inside `pax.purecall`/`pax.pure`;
`.eval()` turns dropout off.
"""

from typing import Any, Dict, Optional

import jax
import jax.numpy as jnp

from pax_haiku._src import haiku_bridge
from pax_haiku._src.nets import _common
from pax_haiku._src.nets import haiku_transformer
from pax_haiku._src.nn import _checks


def _check_config(layer: str, dim: int, num_heads: int, num_layers: int,
                  dropout_rate: float, widening_factor: int) -> None:
  example = (f"pax.nets.{layer}("
             + ("vocab_size=256, " if layer == "TransformerLM" else "")
             + "dim=128, num_heads=4, num_layers=2"
             + (", max_len=64" if layer == "TransformerLM" else "") + ")")
  _checks.positive_int(f"nets.{layer}", "dim", dim, example)
  _checks.positive_int(f"nets.{layer}", "num_heads", num_heads, example)
  _checks.positive_int(f"nets.{layer}", "num_layers", num_layers, example)
  _checks.positive_int(f"nets.{layer}", "widening_factor", widening_factor,
                       example)
  _checks.rate(f"nets.{layer}", "dropout_rate", dropout_rate,
               "dropout_rate=0.1")
  if dim % num_heads:
    raise ValueError(
        f"pax.nets.{layer}: dim ({dim}) must be divisible by num_heads "
        f"({num_heads}).\nFix: e.g. dim=256, num_heads=8.")


def _check_mask(net: Any, mask: Optional[jax.Array], shape: tuple) -> None:
  if mask is not None and tuple(jnp.shape(mask)) != tuple(shape):
    raise ValueError(
        f"{net!r}: mask must have shape (B, T) = {tuple(shape)} (True for "
        f"real tokens), got {tuple(jnp.shape(mask))}.")


class Transformer(haiku_bridge.HaikuModule):
  """A stack of causal pre-LN transformer blocks: `[B, T, D] -> [B, T, D]`.

  Wraps `pax.nets.haiku_transformer.Transformer` (PAX's signature
  `Transformer(dim, num_heads, num_layers, dropout_rate)`).

  >>> net = pax.nets.Transformer(8, num_heads=2, num_layers=1)
  >>> net(jnp.ones((2, 3, 8))).shape
  (2, 3, 8)

  Args:
    dim: model dimension D.
    num_heads: attention heads per layer (must divide `dim`).
    num_layers: number of blocks.
    dropout_rate: dropout in training mode.
    widening_factor: MLP hidden size is `widening_factor * dim`.
    rng_key: key for initialization (default: `pax.next_rng_key()`).
    name: Haiku module name (default `transformer`).
  """

  dim: int
  num_heads: int
  num_layers: int
  dropout_rate: float

  def __init__(self, dim: int, num_heads: int, num_layers: int,
               dropout_rate: float = 0.0, *, widening_factor: int = 4,
               rng_key: Optional[jax.Array] = None,
               name: Optional[str] = None):
    super().__init__(name=name)
    _check_config("Transformer", dim, num_heads, num_layers, dropout_rate,
                  widening_factor)
    self.dim = dim
    self.num_heads = num_heads
    self.num_layers = num_layers
    self.dropout_rate = float(dropout_rate)
    fn = haiku_bridge.HaikuModuleCall(
        haiku_transformer.Transformer, num_heads, num_layers,
        self.dropout_rate, widening_factor, name=name)
    self._init_haiku(fn, (haiku_bridge.sample_input((1, 1, dim)),),
                     {"is_training": True}, rng_key)

  def _haiku_attr_name(self, bundle: str, name: str, role: str) -> str:
    return _common.relative_attr(bundle, name)

  def __call__(self, h: jax.Array,
               mask: Optional[jax.Array] = None) -> jax.Array:
    """Runs the stack on embeddings `h` `[B, T, dim]` (mask: `[B, T]`)."""
    if jnp.ndim(h) != 3 or jnp.shape(h)[-1] != self.dim:
      raise _checks.input_error(self, f"(B, T, {self.dim})", h,
                                "pass embeddings of size dim.")
    _check_mask(self, mask, jnp.shape(h)[:2])
    return super().__call__(h, mask=mask)

  def _repr_info(self) -> Dict[str, Any]:
    return {"dim": self.dim, "num_heads": self.num_heads,
            "num_layers": self.num_layers, "dropout_rate": self.dropout_rate}


class TransformerLM(haiku_bridge.HaikuModule):
  """A causal transformer language model: tokens `[B, T]` -> logits `[B, T, V]`.

  Wraps `pax.nets.haiku_transformer.TransformerLM`; plain Haiku parameters of
  that module load with `net.update_parameters(params)`.

  >>> lm = pax.nets.TransformerLM(vocab_size=11, dim=8, num_heads=2,
  ...                             num_layers=1, max_len=5)
  >>> lm(jnp.zeros((2, 3), jnp.int32)).shape
  (2, 3, 11)
  >>> sorted(lm.params)[:2]
  ['transformer_lm', 'transformer_lm/lm_head']

  Args:
    vocab_size: number of tokens V.
    dim: model dimension D.
    num_heads: attention heads per layer (must divide `dim`).
    num_layers: number of transformer blocks.
    max_len: longest sequence.
    dropout_rate: dropout in training mode.
    widening_factor: MLP hidden size is `widening_factor * dim`.
    rng_key: key for initialization (default: `pax.next_rng_key()`).
    name: Haiku module name (default `transformer_lm`).
  """

  vocab_size: int
  dim: int
  num_heads: int
  num_layers: int
  max_len: int
  dropout_rate: float

  def __init__(self, vocab_size: int, dim: int, num_heads: int,
               num_layers: int, max_len: int, dropout_rate: float = 0.0, *,
               widening_factor: int = 4, rng_key: Optional[jax.Array] = None,
               name: Optional[str] = None):
    super().__init__(name=name)
    _check_config("TransformerLM", dim, num_heads, num_layers, dropout_rate,
                  widening_factor)
    example = "pax.nets.TransformerLM(vocab_size=256, dim=128, ...)"
    self.vocab_size = _checks.positive_int("nets.TransformerLM", "vocab_size",
                                           vocab_size, example)
    self.max_len = _checks.positive_int("nets.TransformerLM", "max_len",
                                        max_len, example)
    self.dim = dim
    self.num_heads = num_heads
    self.num_layers = num_layers
    self.dropout_rate = float(dropout_rate)
    fn = haiku_bridge.HaikuModuleCall(
        haiku_transformer.TransformerLM, vocab_size, dim, num_heads,
        num_layers, max_len, self.dropout_rate, widening_factor, name=name)
    tokens = haiku_bridge.sample_input((1, 1), jnp.int32)
    self._init_haiku(fn, (tokens,), {"is_training": True}, rng_key)

  def _haiku_attr_name(self, bundle: str, name: str, role: str) -> str:
    return _common.relative_attr(bundle, name)

  def __call__(self, tokens: jax.Array,
               mask: Optional[jax.Array] = None) -> jax.Array:
    """Logits `[B, T, V]` of int tokens `[B, T]` (`T <= max_len`)."""
    shape = jnp.shape(tokens)
    if len(shape) != 2 or shape[1] > self.max_len:
      raise _checks.input_error(
          self, f"(B, T) with T <= {self.max_len}", tokens,
          "pass a batch of token id sequences no longer than max_len.")
    if not jnp.issubdtype(jnp.result_type(tokens), jnp.integer):
      raise TypeError(f"{self!r} expects integer token ids, got dtype "
                      f"{jnp.result_type(tokens)}.")
    _check_mask(self, mask, shape)
    return super().__call__(tokens, mask=mask)

  def _repr_info(self) -> Dict[str, Any]:
    return {"vocab_size": self.vocab_size, "dim": self.dim,
            "num_heads": self.num_heads, "num_layers": self.num_layers,
            "max_len": self.max_len}
