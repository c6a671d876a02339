"""`pax.avg_pool` / `pax.max_pool`: Haiku's `hk.avg_pool` / `hk.max_pool`."""

from typing import Optional, Sequence, Union

import haiku as hk
import jax
import jax.numpy as jnp

IntOrSeq = Union[int, Sequence[int]]


def _check(fn: str, value: jax.Array, window_shape: IntOrSeq,
           strides: IntOrSeq, padding: str) -> None:
  if padding not in ("SAME", "VALID"):
    raise ValueError(
        f"pax.{fn}: padding must be 'SAME' or 'VALID', got {padding!r}.")
  for arg, size in (("window_shape", window_shape), ("strides", strides)):
    if isinstance(size, int) and not isinstance(size, bool):
      if size < 1:
        raise ValueError(f"pax.{fn}: {arg} must be >= 1, got {size}.")
      continue
    if not isinstance(size, (tuple, list)) or not all(
        isinstance(s, int) and s >= 1 for s in size) or (
            len(size) > jnp.ndim(value)):
      raise ValueError(
          f"pax.{fn}: {arg} must be an int or a sequence of at most "
          f"{jnp.ndim(value)} positive ints (the input's rank), got "
          f"{size!r}.\nFix: e.g. {arg}=(1, 2, 2, 1) for NHWC images.")


def max_pool(value: jax.Array, window_shape: IntOrSeq, strides: IntOrSeq,
             padding: str,
             channel_axis: Optional[int] = -1) -> jax.Array:
  """Max pooling (`hk.max_pool`).

  >>> x = jnp.arange(16.0).reshape(1, 4, 4, 1)
  >>> pax.max_pool(x, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")[0, :, :, 0]
  Array([[ 5.,  7.],
         [13., 15.]], dtype=float32)

  Args:
    value: the input.
    window_shape: window size, an int or one int per (trailing) axis.
    strides: strides, an int or one int per (trailing) axis.
    padding: 'VALID' or 'SAME'.
    channel_axis: axis not pooled when `window_shape`/`strides` are ints.

  Returns:
    The pooled array (same rank as `value`).
  """
  _check("max_pool", value, window_shape, strides, padding)
  return hk.max_pool(value, window_shape, strides, padding, channel_axis)


def avg_pool(value: jax.Array, window_shape: IntOrSeq, strides: IntOrSeq,
             padding: str,
             channel_axis: Optional[int] = -1) -> jax.Array:
  """Average pooling (`hk.avg_pool`).

  >>> x = jnp.arange(16.0).reshape(1, 4, 4, 1)
  >>> pax.avg_pool(x, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")[0, :, :, 0]
  Array([[ 2.5,  4.5],
         [10.5, 12.5]], dtype=float32)

  Args:
    value: the input.
    window_shape: window size, an int or one int per (trailing) axis.
    strides: strides, an int or one int per (trailing) axis.
    padding: 'VALID' or 'SAME'.
    channel_axis: axis not pooled when `window_shape`/`strides` are ints.

  Returns:
    The pooled array (same rank as `value`).
  """
  _check("avg_pool", value, window_shape, strides, padding)
  return hk.avg_pool(value, window_shape, strides, padding, channel_axis)
