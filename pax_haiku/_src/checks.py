"""Input checks shared by pax's utilities (`grad`, `scan`, optimizers, update).

Each check raises a `TypeError`/`ValueError` whose message says what was
wrong, the likely cause and the fix, so every utility reports a bad input
the same way.

>>> import chex
>>> from pax_haiku._src import checks
>>> checks.chex_check(chex.assert_shape, jnp.zeros(3), (), error=TypeError,
...                   message="the loss must be a scalar")
Traceback (most recent call last):
  ...
TypeError: the loss must be a scalar
>>> checks.describe(jnp.zeros((2, 3)))
'an array of shape (2, 3) and dtype float32'
"""

from typing import Any, Callable, Type, Union

import chex
import jax.numpy as jnp

from pax_haiku._src import module as module_lib




def chex_check(assertion: Callable[..., None], *args: Any,
               error: Type[Exception], message: Union[str, Callable[[], str]],
               **kwargs: Any) -> None:
  """Runs a chex assertion; raises `error(message)` if it fails.

  The chex failure is kept as the exception's `__cause__`. Like every chex
  assertion, the check is skipped under `chex.disable_asserts()`. `message`
  may be a function returning the text, for messages that cost work to
  build (naming the first difference of two trees): it then runs only when
  the check fails, not at every trace.
  """
  try:
    assertion(*args, **kwargs)
  except AssertionError as e:
    raise error(message() if callable(message) else message) from e


def fn_name(fn: Any) -> str:
  """The name of a function (or callable object) for error messages."""
  return getattr(fn, "__qualname__", None) or getattr(
      fn, "__name__", None) or type(fn).__name__


def require_module(value: Any, api: str, what: str = "first argument",
                   example: str = "grad_fn(model, x, y)") -> None:
  """TypeError unless `value` is a pax module."""
  if isinstance(value, module_lib.Module):
    return
  hint = ""
  if isinstance(value, dict):
    hint = (" It looks like a Haiku params dict; pax differentiates modules, "
            "not raw params.")
  elif isinstance(value, (tuple, list)) and any(
      isinstance(v, module_lib.Module) for v in value):
    hint = (" It is a tuple/list that contains modules; pass the model "
            "itself as the first argument.")
  raise TypeError(
      f"{api}: the {what} must be a pax.Module (its trainable parameters "
      f"are what gets differentiated), got {type(value).__name__}.{hint}\n"
      f"Fix: put the model first, e.g. `{example}`; wrap Haiku code with "
      "`model = pax.from_haiku(f)(sample_x)`.")


def describe(value: Any) -> str:
  """A short phrase for `value` in error messages ("an array of shape ...")."""
  if hasattr(value, "shape") and hasattr(value, "dtype"):
    return f"an array of shape {tuple(value.shape)} and dtype {value.dtype}"
  if isinstance(value, module_lib.Module):
    return f"a module ({type(value).__name__})"
  if isinstance(value, (tuple, list)):
    return f"a {type(value).__name__} of length {len(value)}"
  return f"a {type(value).__name__}"


def check_loss(loss: Any, api: str, fun: Any, has_aux: bool,
               holomorphic: bool = False) -> None:
  """TypeError unless `loss` is a scalar float (complex if holomorphic)."""
  name = fn_name(fun)
  if isinstance(loss, (tuple, list)) and not has_aux:
    raise TypeError(
        f"{api}: `{name}` returned {describe(loss)}, but without "
        "`has_aux=True` it must return only the scalar loss.\nLikely cause: "
        "the function also returns auxiliary values.\nFix: pass "
        f"`has_aux=True`, e.g. `{api}({name}, has_aux=True)`, and return "
        "`loss, aux`.")
  if not (hasattr(loss, "shape") and hasattr(loss, "dtype")):
    if isinstance(loss, float) or (holomorphic and isinstance(loss, complex)):
      return
    raise TypeError(
        f"{api}: the loss returned by `{name}` must be a scalar float array, "
        f"got {describe(loss)}.\nFix: return e.g. "
        "`jnp.mean(jnp.square(y - model(x)))`.")
  chex_check(
      chex.assert_shape, loss, (), error=TypeError,
      message=(f"{api}: the loss returned by `{name}` must be a scalar "
               f"(shape ()), got shape {tuple(loss.shape)}.\nLikely cause: a "
               "per-example loss that was not reduced.\nFix: reduce it, e.g. "
               "`loss = jnp.mean(jnp.square(y - y_hat))`."))
  if holomorphic:
    if not jnp.issubdtype(loss.dtype, jnp.complexfloating):
      raise TypeError(
          f"{api}: with `holomorphic=True` the output of `{name}` must be "
          f"complex, got {loss.dtype}.\nFix: drop `holomorphic=True` for a "
          "real-valued loss.")
    return
  chex_check(
      chex.assert_type, loss, float, error=TypeError,
      message=(f"{api}: the loss returned by `{name}` must have a floating "
               f"point dtype, got {loss.dtype}.\nLikely cause: a loss "
               "computed from integer arrays (labels, counts).\nFix: compute "
               "it in float, e.g. "
               "`loss = jnp.mean(errors.astype(jnp.float32))`."))
