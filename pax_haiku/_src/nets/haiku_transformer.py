"""Plain Haiku reference implementation of the pax Transformer nets.

`pax.nets.Transformer` and `pax.nets.TransformerLM` wrap these `hk.Module`s,
so parameters created by ordinary Haiku code,

    hk.transform(lambda t: TransformerLM(...)(t, is_training=True)).init(...)

load into the pax nets (`net.update_parameters(params)`) and the reverse.

The architecture is a pre-LayerNorm, causal decoder in the style of GPT-2 and
Haiku's `examples/transformer`: for each layer,
`h = h + Dropout(Attention(LN(h)))`, `h = h + Dropout(MLP(LN(h)))`, with a
final LayerNorm; the LM adds token and learned positional embeddings and a
linear head.
"""

from typing import Optional

import haiku as hk
import jax
import jax.numpy as jnp


def _check_dims(model_dim: int, num_heads: int, fix: str) -> None:
  if model_dim % num_heads:
    raise ValueError(
        f"The model dimension ({model_dim}) must be divisible by the number "
        f"of heads ({num_heads}).\nFix: {fix}")


def _layer_norm(name: str) -> hk.LayerNorm:
  return hk.LayerNorm(axis=-1, create_scale=True, create_offset=True,
                      name=name)


class Transformer(hk.Module):
  """A stack of causal pre-LN transformer blocks: `[B, T, D] -> [B, T, D]`.

  Parameters (for layer `i`): `transformer/~/layer_{i}_ln_attn`,
  `.../layer_{i}_attn/{query,key,value,linear}`, `.../layer_{i}_ln_mlp`,
  `.../layer_{i}_mlp_in`, `.../layer_{i}_mlp_out`, and
  `transformer/~/ln_final`.

  >>> f = hk.transform(lambda h: pax.nets.haiku_transformer.Transformer(
  ...     num_heads=2, num_layers=1)(h, is_training=False))
  >>> params = jax.jit(f.init)(jax.random.PRNGKey(0), jnp.zeros((1, 1, 8)))
  >>> jax.jit(f.apply)(params, None, jnp.ones((2, 3, 8))).shape
  (2, 3, 8)
  """

  def __init__(self, num_heads: int, num_layers: int,
               dropout_rate: float = 0.0, widening_factor: int = 4,
               name: Optional[str] = None):
    """Builds the stack.

    Args:
      num_heads: attention heads per layer.
      num_layers: number of blocks.
      dropout_rate: dropout after attention and MLP (training only).
      widening_factor: the MLP's hidden size is `widening_factor * D`.
      name: module name.
    """
    super().__init__(name=name)
    self.num_heads = num_heads
    self.num_layers = num_layers
    self.dropout_rate = dropout_rate
    self.widening_factor = widening_factor

  def _dropout(self, x: jax.Array, is_training: bool) -> jax.Array:
    if is_training and self.dropout_rate > 0:
      return hk.dropout(hk.next_rng_key(), self.dropout_rate, x)
    return x

  def __call__(self, h: jax.Array, *, is_training: bool,
               mask: Optional[jax.Array] = None) -> jax.Array:
    """Runs the stack on embeddings `h` `[B, T, D]`.

    Args:
      h: input embeddings `[B, T, D]`.
      is_training: apply dropout.
      mask: optional padding mask `[B, T]` (True = real token), combined
        with the causal mask.

    Returns:
      The output embeddings `[B, T, D]`.
    """
    seq_len, model_dim = h.shape[-2:]
    # D is the embeddings' last dimension: Transformer has no argument for it.
    _check_dims(model_dim, self.num_heads,
                "pass embeddings `h` whose last dimension is a multiple of "
                f"num_heads, e.g. {4 * self.num_heads}, or a num_heads that "
                f"divides {model_dim}.")
    causal = jnp.tril(jnp.ones((1, 1, seq_len, seq_len), dtype=bool))
    if mask is not None:
      causal = causal & mask[:, None, None, :].astype(bool)
    init = hk.initializers.VarianceScaling(2.0 / self.num_layers)
    for i in range(self.num_layers):
      x = _layer_norm(f"layer_{i}_ln_attn")(h)
      x = hk.MultiHeadAttention(
          num_heads=self.num_heads, key_size=model_dim // self.num_heads,
          w_init=init, name=f"layer_{i}_attn")(x, x, x, causal)
      h = h + self._dropout(x, is_training)
      x = _layer_norm(f"layer_{i}_ln_mlp")(h)
      x = hk.Linear(self.widening_factor * model_dim, w_init=init,
                    name=f"layer_{i}_mlp_in")(x)
      x = jax.nn.gelu(x)
      x = hk.Linear(model_dim, w_init=init, name=f"layer_{i}_mlp_out")(x)
      h = h + self._dropout(x, is_training)
    return _layer_norm("ln_final")(h)


class TransformerLM(hk.Module):
  """A causal language model: token ids `[B, T]` -> logits `[B, T, V]`.

  Parameters: `transformer_lm/positional_embeddings` `[max_len, D]`,
  `transformer_lm/~/token_embed/embeddings` `[V, D]`, the
  `transformer_lm/~/transformer/~/...` stack and
  `transformer_lm/~/lm_head/{w,b}`.

  >>> f = hk.transform(lambda t: pax.nets.haiku_transformer.TransformerLM(
  ...     vocab_size=11, model_dim=8, num_heads=2, num_layers=1,
  ...     max_len=5)(t, is_training=False))
  >>> params = jax.jit(f.init)(jax.random.PRNGKey(0), jnp.zeros((1, 1), jnp.int32))
  >>> jax.jit(f.apply)(params, None, jnp.zeros((2, 3), jnp.int32)).shape
  (2, 3, 11)
  """

  def __init__(self, vocab_size: int, model_dim: int, num_heads: int,
               num_layers: int, max_len: int, dropout_rate: float = 0.0,
               widening_factor: int = 4, name: Optional[str] = None):
    """Builds the language model.

    Args:
      vocab_size: number of tokens V.
      model_dim: embedding size D.
      num_heads: attention heads per layer.
      num_layers: number of transformer blocks.
      max_len: longest sequence (size of the positional embeddings).
      dropout_rate: dropout on embeddings and in the blocks (training only).
      widening_factor: the MLP's hidden size is `widening_factor * D`.
      name: module name.
    """
    super().__init__(name=name)
    _check_dims(model_dim, num_heads, "e.g. model_dim=256, num_heads=8.")
    self.vocab_size = vocab_size
    self.model_dim = model_dim
    self.num_heads = num_heads
    self.num_layers = num_layers
    self.max_len = max_len
    self.dropout_rate = dropout_rate
    self.widening_factor = widening_factor

  def __call__(self, tokens: jax.Array, *, is_training: bool,
               mask: Optional[jax.Array] = None) -> jax.Array:
    """Returns next-token logits `[B, T, V]` for token ids `[B, T]`.

    Args:
      tokens: int token ids `[B, T]` with `T <= max_len`.
      is_training: apply dropout.
      mask: optional padding mask `[B, T]` (True = real token).

    Returns:
      Logits `[B, T, vocab_size]`.
    """
    seq_len = tokens.shape[-1]
    init = hk.initializers.TruncatedNormal(stddev=0.02)
    h = hk.Embed(self.vocab_size, self.model_dim, w_init=init,
                 name="token_embed")(tokens)
    positions = hk.get_parameter("positional_embeddings",
                                 [self.max_len, self.model_dim], init=init)
    h = h + positions[:seq_len]
    if is_training and self.dropout_rate > 0:
      h = hk.dropout(hk.next_rng_key(), self.dropout_rate, h)
    h = Transformer(self.num_heads, self.num_layers, self.dropout_rate,
                    self.widening_factor)(h, is_training=is_training,
                                          mask=mask)
    return hk.Linear(self.vocab_size, name="lm_head")(h)
