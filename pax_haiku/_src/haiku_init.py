"""Fast Haiku `init`: the same parameters with a few reusable compilations.

`hk.transform_with_state(f).init(key, x)` run eagerly compiles tiny XLA
programs for every new shape: each `jax.random.truncated_normal` of a new
shape is a full compilation (~1 s on 2 CPU cores), and the sample forward
pass compiles each of its ops again. `init` below gives the same arrays:

1. It traces `init` abstractly (`jax.eval_shape`: no compilation) under a
   `hk.custom_creator` that computes every parameter and state initial value
   concretely (`jax.ensure_compile_time_eval`), in Haiku's creation order, so
   the RNG sequence advances exactly as in Haiku.
2. Haiku's random initializers (`TruncatedNormal`, `RandomNormal`,
   `RandomUniform`, `VarianceScaling`, with float32 parameters and
   threefry keys) are computed in fixed-size chunks by one jitted program
   per (distribution, chunk size). JAX's partitionable threefry draws
   element `i` of any shape from counter `i`, so a chunk at counter offset
   `k * chunk` holds elements `k * chunk ...` of the flat array: the values
   equal `jax.random.*(key, shape)` bit for bit, with no per-shape compile.
   Constant initializers are built on the host. Any other initializer runs
   as Haiku would run it (eagerly).
3. Values that depend on the sample inputs (e.g. `hk.BatchNorm`'s moving
   averages set during `init`) come from one jitted forward pass that takes
   the already known leaves as arguments, compiled with LLVM optimizations
   off (the program runs once).

Compiled programs are JAX's own jit caches (bounded by JAX) and, with
`pax.enable_compilation_cache()`, JAX's persistent cache across processes.
"""

import functools
import math
from typing import Any, Callable, Dict, List, Optional, Tuple

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

# Chunk sizes of the random programs: one small one for biases and small
# weights, one large one for the rest (the last chunk of a weight is partly
# wasted work, at most one chunk per parameter).
_SMALL_CHUNK = 1 << 10
_LARGE_CHUNK = 1 << 16
# The forward pass for data-dependent leaves runs once: compile it fast.
_FORWARD_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0,
                             "xla_llvm_disable_expensive_passes": True}


def _threefry_ok() -> bool:
  return (jax.config.jax_threefry_partitionable and
          str(jax.config.jax_default_prng_impl) == "threefry2x32")


def _key_data(key: Any) -> Optional[jax.Array]:
  """The uint32[2] threefry key data of `key`, or None if not threefry."""
  if isinstance(key, jax.core.Tracer) or not isinstance(key, jax.Array):
    return None
  if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    if key.shape or "threefry" not in str(jax.random.key_impl(key)):
      return None
    return jax.random.key_data(key)
  if key.dtype == jnp.uint32 and key.shape == (2,) and _threefry_ok():
    return key
  return None


# -- the chunked random programs ---------------------------------------------

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
_mul = jax.jit(jax.lax.mul)
_add = jax.jit(jax.lax.add)


@functools.partial(jax.jit, static_argnames=("kind", "chunk"))
def _chunk(key_data: jax.Array, offset: jax.Array, a: jax.Array,
           b: jax.Array, lower: jax.Array, upper: jax.Array, *, kind: str,
           chunk: int) -> jax.Array:
  """Elements `offset ... offset + chunk` of a flat float32 random array.

  `kind` is "truncated_normal" (`truncated_normal(lower, upper)`), "normal"
  or "uniform" (`uniform(minval=a, maxval=b)`); `_random` scales the first
  two as Haiku does.
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


def _random(key_data: jax.Array, shape: Tuple[int, ...], kind: str,
            a: Any, b: Any, lower: float, upper: float) -> jax.Array:
  n = math.prod(shape)
  chunk = _SMALL_CHUNK if n <= _SMALL_CHUNK else _LARGE_CHUNK
  # Bounds are runtime arguments, as in `jax.random.truncated_normal`
  # (constants would be folded by XLA, possibly to other bits).
  a, b, lower, upper = (np.float32(v) for v in (a, b, lower, upper))
  parts = []
  for offset in range(0, n, chunk):
    part = _chunk(key_data, np.uint32(offset), a, b, lower, upper, kind=kind,
                  chunk=chunk)
    if kind == "truncated_normal":  # Haiku's `TruncatedNormal`.
      part = _add(_mul(a, part), b)
    elif kind == "normal":  # Haiku's `RandomNormal`.
      part = _add(b, _mul(a, part))
    parts.append(np.asarray(part))
  flat = parts[0] if len(parts) == 1 else np.concatenate(parts)
  return jax.device_put(flat[:n].reshape(shape))


# -- recognising Haiku's initializers ----------------------------------------

def _fans(shape, fan_in_axes) -> Tuple[float, float]:
  """Haiku's `_compute_fans` (checked against Haiku in the tests)."""
  if len(shape) < 1:
    fan_in = fan_out = 1
  elif len(shape) == 1:
    fan_in = fan_out = shape[0]
  elif len(shape) == 2:
    fan_in, fan_out = shape
  else:
    if fan_in_axes is not None:
      fan_in = np.prod([shape[i] for i in fan_in_axes])
      fan_out = np.prod([s for i, s in enumerate(shape)
                         if i not in fan_in_axes])
    else:
      receptive_field_size = np.prod(shape[:-2])
      fan_in = shape[-2] * receptive_field_size
      fan_out = shape[-1] * receptive_field_size
  return fan_in, fan_out


def _variance_scaling(init: Any, shape, dtype) -> Optional[Any]:
  """The Haiku initializer `hk.initializers.VarianceScaling` delegates to."""
  scale = init.scale
  fan_in, fan_out = _fans(shape, init.fan_in_axes)
  if init.mode == "fan_in":
    scale /= max(1.0, fan_in)
  elif init.mode == "fan_out":
    scale /= max(1.0, fan_out)
  else:
    scale /= max(1.0, (fan_in + fan_out) / 2.0)
  if init.distribution == "truncated_normal":
    stddev = np.sqrt(scale)
    distribution_stddev = np.asarray(.87962566103423978, dtype=dtype)
    return hk.initializers.TruncatedNormal(stddev=stddev /
                                           distribution_stddev)
  if init.distribution == "normal":
    return hk.initializers.RandomNormal(stddev=np.sqrt(scale))
  limit = np.sqrt(3.0 * scale)
  return hk.initializers.RandomUniform(minval=-limit, maxval=limit)


def _is_scalar(value: Any) -> bool:
  return isinstance(value, (int, float, np.number)) and not isinstance(
      value, bool)


def _no_rng(compute: Callable[[], jax.Array]) -> Callable[[], jax.Array]:
  compute.uses_rng = False
  return compute


def fast_value(init: Any, shape: Tuple[int, ...], dtype: Any
               ) -> Optional[Callable[[], jax.Array]]:
  """A function computing `init(shape, dtype)` fast, or None if unknown.

  Random ones draw their key with `hk.next_rng_key()` once, as Haiku's do.
  """
  dtype = np.dtype(dtype)
  shape = tuple(int(s) for s in shape)
  if init is jnp.zeros or init is jnp.ones:
    fill = 0 if init is jnp.zeros else 1
    return _no_rng(lambda: jax.device_put(np.full(shape, fill, dtype)))
  if type(init).__name__ == "VarianceScaling" and hasattr(init, "mode") and (
      type(init).__module__.startswith("pax_haiku.")):
    init = hk.initializers.VarianceScaling(init.scale, init.mode,
                                           init.distribution)
  if type(init) is hk.initializers.Constant:
    c = init.constant
    if not _is_scalar(c) or not jnp.issubdtype(dtype, jnp.floating):
      return None
    # `jnp.asarray(c)`'s dtype, without tracing it.
    host = np.asarray(c, jax.dtypes.canonicalize_dtype(np.result_type(c)))
    if not jnp.issubdtype(host.dtype, jnp.floating) and not isinstance(
        c, int):
      return None
    return _no_rng(
        lambda: jax.device_put(np.broadcast_to(host, shape).astype(dtype)))
  if dtype != np.float32 or math.prod(shape) >= 2 ** 32 or (
      jax.config.jax_enable_x64):
    return None
  if type(init) is hk.initializers.VarianceScaling:
    if init.distribution not in ("truncated_normal", "normal", "uniform"):
      return None
    init = _variance_scaling(init, shape, dtype)
  kind = {hk.initializers.TruncatedNormal: "truncated_normal",
          hk.initializers.RandomNormal: "normal",
          hk.initializers.RandomUniform: "uniform"}.get(type(init))
  if kind is None:
    return None
  if kind == "uniform":
    a, b, lower, upper = init.minval, init.maxval, 0.0, 0.0
  elif kind == "normal":
    a, b, lower, upper = init.stddev, init.mean, 0.0, 0.0
  else:
    a, b, lower, upper = init.stddev, init.mean, init.lower, init.upper
  if not all(_is_scalar(v) or (isinstance(v, (np.ndarray, jax.Array)) and
                               v.shape == () and not isinstance(
                                   v, jax.core.Tracer))
             for v in (a, b, lower, upper)):
    return None

  def compute():
    key_data = _key_data(hk.next_rng_key())
    if key_data is None:
      raise _NotConcrete()
    return _random(key_data, shape, kind, a, b, lower, upper)
  compute.uses_rng = True
  return compute


class _NotConcrete(Exception):
  """The RNG key is traced: the value must come from the forward pass."""


# -- init ----------------------------------------------------------------------

def _split_arrays(args: Any) -> Tuple[List[Any], Callable[[List[Any]], Any]]:
  """Array leaves of `args` (to trace) and a function putting them back."""
  leaves, treedef = jax.tree_util.tree_flatten(args)
  where = [i for i, l in enumerate(leaves)
           if isinstance(l, (jax.Array, np.ndarray))]

  def merge(arrays):
    out = list(leaves)
    for i, a in zip(where, arrays):
      out[i] = a
    return treedef.unflatten(out)
  return [leaves[i] for i in where], merge


_Key = Tuple[int, str, str]  # (0 params / 1 state, module name, leaf name)


def _with_creators(fn: Callable[..., Any], make: Callable[[int], Any]
                   ) -> Callable[..., Any]:
  """`fn` under one custom creator for params (role 0), one for state."""
  def wrapped(*args, **kwargs):
    with hk.custom_creator(make(0), params=True, state=False), \
        hk.custom_creator(make(1), params=False, state=True):
      return fn(*args, **kwargs)
  return wrapped


def init(fn: Callable[..., Any], rng_key: jax.Array, args: Tuple[Any, ...],
         kwargs: Dict[str, Any]) -> Tuple[hk.Params, hk.State]:
  """`hk.transform_with_state(fn).init(rng_key, *args, **kwargs)`, faster.

  Runs Haiku's own `init` when the inputs or the key are traced (a lazy
  module built inside `jax.jit`): there is nothing to compute ahead then.
  """
  arrays, merge = _split_arrays((args, kwargs))
  if isinstance(rng_key, jax.core.Tracer) or any(
      isinstance(a, jax.core.Tracer) for a in arrays):
    return hk.transform_with_state(fn).init(rng_key, *args, **kwargs)
  known, shapes = _trace(fn, rng_key, arrays, merge, eager_forward=False)
  if known is None:
    # The forward pass drew RNG keys before some initializer: trace again
    # with every input-independent op (key splits included) run eagerly, as
    # Haiku's own eager init runs it, so the initializers' keys are concrete.
    known, shapes = _trace(fn, rng_key, arrays, merge, eager_forward=True)
  # Leaves created by `hk.set_state` alone (no initializer), or whose
  # initializer read the inputs, come from the forward pass.
  missing = [(role, bundle, name)
             for role, tree in enumerate(shapes)
             for bundle, leaves in tree.items() for name in leaves
             if (role, bundle, name) not in known]
  if missing:
    values = _forward_values(fn, rng_key, arrays, merge, known, missing)
    known.update(zip(missing, values))
  return tuple({bundle: {name: known[(role, bundle, name)] for name in leaves}
                for bundle, leaves in tree.items()}
               for role, tree in enumerate(shapes))


def _trace(fn: Callable[..., Any], rng_key: jax.Array, arrays: List[Any],
           merge: Callable[[List[Any]], Any], eager_forward: bool
           ) -> Tuple[Optional[Dict[_Key, jax.Array]], Any]:
  """Traces `init` abstractly, computing the initializers' values.

  Returns the values computed (None if an initializer got a traced key and
  `eager_forward` is off) and the `(params, state)` shapes.
  """
  known: Dict[_Key, jax.Array] = {}
  traced_key = []

  def make(role):
    def creator(next_creator, shape, dtype, init_fn, context):
      key = (role, context.module_name, context.name)
      fast = fast_value(init_fn, shape, dtype)

      def concrete(shape, dtype):
        with jax.ensure_compile_time_eval():
          try:
            value = fast() if fast is not None else init_fn(shape, dtype)
          except _NotConcrete:
            traced_key.append(key)
            value = init_fn(shape, dtype)
        if not isinstance(value, jax.core.Tracer):
          known[key] = value
        return value
      return next_creator(shape, dtype, concrete)
    return creator

  traced = hk.transform_with_state(_with_creators(fn, make))

  def run(arr):
    args, kwargs = merge(arr)
    return traced.init(rng_key, *args, **kwargs)

  if eager_forward:
    with jax.ensure_compile_time_eval():
      shapes = jax.eval_shape(run, arrays)
  else:
    shapes = jax.eval_shape(run, arrays)
  return (None if traced_key and not eager_forward else known), shapes


def _forward_values(fn: Callable[..., Any], rng_key: jax.Array,
                    arrays: List[Any], merge: Callable[[List[Any]], Any],
                    known: Dict[_Key, jax.Array], missing: List[_Key]
                    ) -> List[jax.Array]:
  """The `missing` leaves of `init`, by one jitted forward pass."""
  given: Dict[_Key, Any] = {}

  def make(role):
    def creator(next_creator, shape, dtype, init_fn, context):
      key = (role, context.module_name, context.name)

      def create(shape, dtype):
        if key not in given:
          return init_fn(shape, dtype)
        fast = fast_value(init_fn, shape, dtype)
        if fast is None:
          init_fn(shape, dtype)  # Advances the RNG sequence as in Haiku.
        elif fast.uses_rng:
          hk.next_rng_key()
        return given[key]
      return next_creator(shape, dtype, create)
    return creator

  traced = hk.transform_with_state(_with_creators(fn, make))

  def forward(known_values, arr):
    given.clear()
    given.update(known_values)
    args, kwargs = merge(arr)
    out = traced.init(rng_key, *args, **kwargs)
    return [out[role][bundle][name] for role, bundle, name in missing]

  compiled = jax.jit(forward).lower(known, arrays).compile(
      compiler_options=_FORWARD_COMPILER_OPTIONS)
  return compiled(known, arrays)
