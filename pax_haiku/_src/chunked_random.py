"""Haiku's random initializers, drawn in chunks by a few reusable programs.

`jax.random.truncated_normal(key, shape)` (and `normal`, `uniform`) compiles
a program for every new shape. With JAX's partitionable threefry, element
`i` of any shape is drawn from counter `i`: `draw` computes a flat float32
array in fixed-size chunks (`_CHUNK` elements, one jitted program per
distribution, whatever the shape), at counter offsets `k * _CHUNK`, then
scales it as Haiku's initializers do. The values equal Haiku's bit for bit
(tests/haiku_init_test.py). `pax_haiku._src.haiku_init` decides which
initializers go through here.
"""

import functools
import math
from typing import Any, Tuple

import jax
import jax.numpy as jnp
import numpy as np

# Elements per run of a random program: one program per distribution, for
# every shape (a weight's last chunk is partly wasted work, well under a
# millisecond; a second, smaller program would cost a compile).
_CHUNK = 1 << 15


def _uniform_bits_to_float(bits: jax.Array, minval: jax.Array,
                           maxval: jax.Array) -> jax.Array:
  """`jax.random.uniform`'s float32 mapping of 32 random bits."""
  float_bits = jax.lax.shift_right_logical(bits, jnp.uint32(32 - 23))
  float_bits = jax.lax.bitwise_or(
      float_bits, jnp.asarray(np.array(1.0, np.float32).view(np.uint32),
                              dtype=jnp.uint32))
  floats = jax.lax.bitcast_convert_type(float_bits, jnp.float32) - jnp.array(
      1., jnp.float32)
  return jax.lax.max(minval, floats * (maxval - minval) + minval)


# Haiku scales eagerly, `s * x + m` as two programs (each result rounded);
# fused into one program XLA would use a multiply-add, 1 ulp apart.
mul = jax.jit(jax.lax.mul)
add = jax.jit(jax.lax.add)
_TINY = np.finfo(np.float32).tiny


def _flush_denormals(x: np.ndarray) -> np.ndarray:
  """float32 denormals as signed zeros, as XLA's CPU kernels read and write
  them (flush-to-zero)."""
  return np.where(np.abs(x) < _TINY, np.copysign(np.float32(0), x), x)


def scale(kind: str, part: jax.Array, a: np.float32, b: np.float32
           ) -> np.ndarray:
  """Haiku's `stddev * x + mean` of a chunk, rounded as Haiku's two programs.

  On the CPU backend, NumPy's float32 multiply and add (IEEE, unfused) with
  XLA's flush-to-zero give the same bits as those programs, without
  compiling them in every process; elsewhere the programs run.
  """
  if jax.default_backend() != "cpu":
    if kind == "truncated_normal":  # Haiku's `TruncatedNormal`.
      return np.asarray(add(mul(a, part), b))
    return np.asarray(add(b, mul(a, part)))  # Haiku's `RandomNormal`.
  x, a, b = (_flush_denormals(np.asarray(v, np.float32)) for v in (part, a, b))
  return _flush_denormals(_flush_denormals(a * x) + b)


@functools.partial(jax.jit, static_argnames=("kind", "chunk"))
def _chunk(key_data: jax.Array, offset: jax.Array, a: jax.Array,
           b: jax.Array, lower: jax.Array, upper: jax.Array, *, kind: str,
           chunk: int) -> jax.Array:
  """Elements `offset ... offset + chunk` of a flat float32 random array.

  `kind` is "truncated_normal" (`truncated_normal(lower, upper)`), "normal"
  or "uniform" (`uniform(minval=a, maxval=b)`); `draw` scales the first
  two as Haiku does (`scale`).
  """
  f32 = jnp.float32
  count = offset + jax.lax.iota(jnp.uint32, chunk)
  bits1, bits2 = jax.extend.random.threefry2x32_p.bind(
      key_data[0], key_data[1], jnp.zeros_like(count), count)
  bits = bits1 ^ bits2
  if kind == "uniform":
    return _uniform_bits_to_float(bits, a, b)
  sqrt2 = np.array(np.sqrt(2), f32)
  if kind == "normal":
    lo = np.nextafter(np.array(-1., f32), np.array(0., f32), dtype=f32)
    u = _uniform_bits_to_float(bits, jnp.asarray(lo), jnp.asarray(1., f32))
    return jax.lax.mul(sqrt2, jax.lax.erf_inv(u))
  lo = jax.lax.convert_element_type(lower, f32)
  hi = jax.lax.convert_element_type(upper, f32)
  u = _uniform_bits_to_float(bits, jax.lax.erf(lo / sqrt2),
                             jax.lax.erf(hi / sqrt2))
  out = jnp.clip(sqrt2 * jax.lax.erf_inv(u),
                 jax.lax.nextafter(lo, np.array(np.inf, f32)),
                 jax.lax.nextafter(hi, np.array(-np.inf, f32)))
  return out


def draw(key_data: jax.Array, shape: Tuple[int, ...], kind: str,
            a: Any, b: Any, lower: float, upper: float) -> jax.Array:
  n = math.prod(shape)
  offsets = [(o, _CHUNK) for o in range(0, n, _CHUNK)]
  # Bounds are runtime arguments, as in `jax.random.truncated_normal`
  # (constants would be folded by XLA, possibly to other bits).
  a, b, lower, upper = (np.float32(v) for v in (a, b, lower, upper))
  parts = []
  for offset, chunk in offsets:
    part = _chunk(key_data, np.uint32(offset), a, b, lower, upper, kind=kind,
                  chunk=chunk)
    if kind in ("truncated_normal", "normal"):
      part = scale(kind, part, a, b)
    parts.append(np.asarray(part))
  flat = parts[0] if len(parts) == 1 else np.concatenate(parts)
  return jax.device_put(flat[:n].reshape(shape))
