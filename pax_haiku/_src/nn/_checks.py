"""Argument and input-shape checks shared by the Haiku-backed layers.

Every check raises a `ValueError`/`TypeError` that names the layer, says what
was wrong and shows a fix, so a bad constructor argument never surfaces as an
obscure error from deep inside Haiku or XLA.
"""

import dataclasses
from typing import Any, Optional, Sequence, Tuple, Union

import haiku as hk
import jax
import jax.numpy as jnp


def positive_int(layer: str, arg: str, value: Any, example: str) -> int:
  """Returns `value` if it is a positive Python int, else raises ValueError."""
  if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
    raise ValueError(
        f"pax.{layer}: {arg} must be a positive int, got {value!r}.\n"
        f"Fix: e.g. {example}.")
  return value


def rate(layer: str, arg: str, value: Any, example: str) -> float:
  """Returns `value` if it is a float in [0, 1), else raises ValueError."""
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
      0.0 <= value < 1.0):
    raise PaxArgumentError(  # PAX asserts this: also an AssertionError.
        f"pax.{layer}: {arg} must be a float in [0, 1), got {value!r}.\n"
        f"Fix: e.g. {example}.")
  return float(value)


def one_of(layer: str, arg: str, value: Any, allowed: Sequence[Any]) -> Any:
  """Returns `value` if it is in `allowed`, else raises ValueError."""
  if value not in allowed:
    raise ValueError(
        f"pax.{layer}: {arg} must be one of {', '.join(map(repr, allowed))}; "
        f"got {value!r}.")
  return value


def int_tuple(layer: str, arg: str, value: Any, ndim: int,
              minimum: int = 1) -> Union[int, Tuple[int, ...]]:
  """An int, or a sequence of `ndim` ints, as a hashable int/tuple."""
  def ok(v):
    return isinstance(v, int) and not isinstance(v, bool) and v >= minimum

  if ok(value):
    return value
  if isinstance(value, (tuple, list)) and len(value) == ndim and all(
      ok(v) for v in value):
    return tuple(value)
  raise ValueError(
      f"pax.{layer}: {arg} must be an int >= {minimum} or a sequence of "
      f"{ndim} such ints, got {value!r}.\nFix: e.g. {arg}=3 or "
      f"{arg}={(3,) * ndim}.")


def padding(layer: str, value: Any, ndim: int) -> Any:
  """'SAME'/'VALID' or `ndim` (low, high) pairs, as a hashable value."""
  if isinstance(value, str):
    if value.upper() not in ("SAME", "VALID"):
      raise ValueError(
          f"pax.{layer}: padding must be 'SAME', 'VALID' or {ndim} "
          f"(low, high) pairs, got {value!r}.")
    return value.upper()
  if callable(value):
    return value
  if isinstance(value, (tuple, list)) and value and all(
      callable(v) for v in value) and len(value) == ndim:
    return tuple(value)  # Haiku's padding functions, one per dimension.
  try:
    pairs = tuple((int(lo), int(hi)) for lo, hi in value)
  except (TypeError, ValueError):
    pairs = None
  if pairs is None or len(pairs) != ndim:
    raise ValueError(
        f"pax.{layer}: padding must be 'SAME', 'VALID' or {ndim} "
        f"(low, high) pairs, got {value!r}.\nFix: e.g. padding='SAME' or "
        f"padding={((1, 1),) * ndim}.")
  return pairs


def float_input(layer: Any, x: Any) -> None:
  """TypeError unless `x` is floating point (what XLA's convolutions need)."""
  dtype = jnp.result_type(x)
  if not jnp.issubdtype(dtype, jnp.floating):
    raise TypeError(
        f"{layer!r} expects floating-point inputs, got dtype {dtype}.\n"
        "Likely cause: integer pixels or token ids fed to a convolution.\n"
        "Fix: cast first, e.g. `x.astype(jnp.float32) / 255.0` for "
        "images; embed token ids with `pax.Embed` before convolving.")


def input_error(layer: Any, expected: str, x: Any, hint: str) -> ValueError:
  return ValueError(
      f"{layer!r} expects inputs of shape {expected}, got "
      f"{tuple(jnp.shape(x))}.\nFix: {hint}")


@dataclasses.dataclass(frozen=True)
class VarianceScaling:
  """`hk.initializers.VarianceScaling` that compares by value.

  Layers keep their Haiku constructor arguments in a value-equal
  `HaikuModuleCall`, so two identical layers share a treedef and a jit cache
  entry; Haiku's own initializer objects compare by identity.
  """
  scale: float
  mode: str = "fan_in"
  distribution: str = "truncated_normal"

  def __call__(self, shape: Sequence[int], dtype: Any) -> jax.Array:
    return hk.initializers.VarianceScaling(self.scale, self.mode,
                                           self.distribution)(shape, dtype)


def leaf_rename(name: str) -> str:
  """Haiku leaf names -> PAX attribute names (`w` -> `weight`)."""
  return {"w": "weight", "b": "bias"}.get(name, name)



class PaxArgumentError(ValueError, AssertionError):
  """A bad constructor argument that PAX rejected with a bare `assert`.

  It is a `ValueError` with a message (this library's rule for bad input)
  and also an `AssertionError`, so PAX code written as
  `with pytest.raises(AssertionError): pax.Dropout(1.0)` keeps working.
  """


# Names a PAX/JAX-style initializer gives its first parameter (the key).
_KEY_PARAM_HINTS = ("key", "rng")


@dataclasses.dataclass(frozen=True)
class PaxInitializer:
  """A PAX/JAX-style `init(rng_key, shape[, dtype])` in Haiku's form.

  Haiku calls initializers as `init(shape, dtype)` and hands out keys with
  `hk.next_rng_key()`; PAX (and `jax.nn.initializers`) take the key first.
  This wrapper draws the key from Haiku, so the layer's parameters stay
  reproducible from its `rng_key`. It compares by the wrapped function, so
  two layers built with the same initializer share a treedef.
  """
  fn: Any
  pass_dtype: bool

  def __call__(self, shape: Sequence[int], dtype: Any) -> jax.Array:
    key = hk.next_rng_key()
    if self.pass_dtype:
      return jnp.asarray(self.fn(key, tuple(shape), dtype), dtype)
    return jnp.asarray(self.fn(key, tuple(shape)), dtype)


def _positional_params(fn: Any):
  """`(names, required, max)` of `fn`'s positional parameters, or None."""
  import inspect  # pylint: disable=g-import-not-at-top
  try:
    sig = inspect.signature(fn)
  except (TypeError, ValueError):
    return None
  names, required, maximum = [], 0, 0
  for p in sig.parameters.values():
    if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
      names.append(p.name)
      maximum += 1
      if p.default is p.empty:
        required += 1
    elif p.kind == p.VAR_POSITIONAL:
      maximum = float("inf")
  return names, required, maximum


def initializer(layer: str, arg: str, fn: Any) -> Any:
  """An initializer in Haiku's `init(shape, dtype)` form (None stays None).

  Accepts Haiku's form (`hk.initializers.*`, `jnp.zeros`, ...) and PAX's
  `init(rng_key, shape[, dtype])` (`jax.nn.initializers.*`). The form is
  read from the signature: a first parameter named like a key (`key`,
  `rng_key`, `rng`...) or exactly three required positional parameters mean
  PAX's;
  a first parameter named `shape`, or two positional parameters, mean
  Haiku's (a Haiku `Initializer` object always is).
  """
  if fn is None or isinstance(fn, (VarianceScaling, PaxInitializer)):
    return fn
  if type(fn).__module__.startswith("haiku."):
    return fn  # `hk.initializers.*` objects.
  if not callable(fn):
    raise TypeError(
        f"pax.{layer}: {arg} must be an initializer function, got "
        f"{type(fn).__name__}.\nFix: e.g. {arg}=jax.nn.initializers.normal() "
        f"(PAX form) or {arg}=hk.initializers.RandomNormal() (Haiku form).")
  info = _positional_params(fn)
  if info is None:  # No signature (a builtin): Haiku's form, as before.
    return fn
  names, required, maximum = info
  first = names[0].lower() if names else ""
  if any(h in first for h in _KEY_PARAM_HINTS) or required == 3:
    if 2 <= maximum and required <= 3:  # Called as (key, shape[, dtype]).
      return PaxInitializer(fn, pass_dtype=maximum >= 3)
  elif maximum >= 2 and required <= 2:
    return fn  # Haiku's `init(shape, dtype)`.
  raise TypeError(
      f"pax.{layer}: {arg}={fn!r} takes neither Haiku's `init(shape, dtype)` "
      f"nor PAX's `init(rng_key, shape, dtype)` arguments (its positional "
      f"parameters: {names}).\nFix: pass e.g. jax.nn.initializers.normal() or "
      "hk.initializers.RandomNormal(), or a function "
      "`lambda shape, dtype: ...` / `lambda rng_key, shape, dtype: ...`.")


def initializers(layer: str, **inits: Any) -> Tuple[Any, ...]:
  """`initializer` on each keyword argument, in order."""
  return tuple(initializer(layer, arg, fn) for arg, fn in inits.items())
