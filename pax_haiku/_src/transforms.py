"""`pax.grad`, `pax.value_and_grad` and `pax.scan`.

`grad`/`value_and_grad` differentiate a function of a module with respect to
the module's trainable parameters only: the function is rewritten as
`f(params, module, *args) = fun(module.update_parameters(params), *args)` and
differentiated at `params = module.parameters()`, so the gradients are a copy
of the module (non-trainable leaves are `None`) that fits
`module.update_parameters` and the optimizers of `pax.from_optax`.

Inputs are checked (with chex where it helps) and a bad input is a
`TypeError`/`ValueError` that says what is wrong, why, and how to fix it.
"""

import functools
from typing import Any, Callable, Optional, Sequence, Tuple, TypeVar

import jax
import jax.numpy as jnp

from pax_haiku._src import checks
from pax_haiku._src import haiku_naming

C = TypeVar("C")

# Keyword arguments of `jax.grad` that make sense for pax (`argnums` does not:
# only the first argument's trainable parameters are differentiated).
_JAX_GRAD_KWARGS = ("holomorphic", "allow_int", "reduce_axes")


def _check_output(out: Any, api: str, fun: Any, has_aux: bool,
                  holomorphic: bool) -> None:
  if has_aux:
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
      name = checks.fn_name(fun)
      raise TypeError(
          f"{api}: with `has_aux=True`, `{name}` must return a pair "
          f"`(loss, aux)`, got {checks.describe(out)}.\nFix: `return loss, "
          "aux` (e.g. `return loss, (loss, model)` to also hand back the "
          "updated model), or drop `has_aux=True` if there is no auxiliary "
          "output.")
    loss = out[0]
  else:
    loss = out
  checks.check_loss(loss, api, fun, has_aux, holomorphic)


def _check_jax_kwargs(api: str, args: Sequence[Any],
                      kwargs: dict) -> None:
  if args or "argnums" in kwargs:
    raise TypeError(
        f"{api} differentiates only the trainable parameters of the first "
        "argument, so `argnums` (or extra positional arguments) is not "
        "supported.\nFix: make the values you want gradients for trainable "
        "attributes of the module (see `pax.parameters_method`), or use "
        "`jax.grad(f, argnums=...)` directly for plain arrays.")
  unknown = sorted(set(kwargs) - set(_JAX_GRAD_KWARGS) - {"has_aux"})
  if unknown:
    raise TypeError(
        f"{api} got unexpected keyword arguments {unknown}; it accepts "
        f"`has_aux` and the `jax.grad` options {list(_JAX_GRAD_KWARGS)}.")


def _check_differentiable(params: Any, api: str) -> None:
  """TypeError naming the first trainable leaf that is not float/complex."""
  for leaf in jax.tree_util.tree_leaves(params):
    dtype = getattr(leaf, "dtype", None)
    if dtype is None or jnp.issubdtype(dtype, jnp.inexact):
      continue
    path = next(jax.tree_util.keystr(p) for p, x in
                jax.tree_util.tree_flatten_with_path(params)[0] if x is leaf)
    raise TypeError(
        f"{api}: the trainable parameter `{path}` has dtype {dtype}; "
        "gradients need floating-point (or complex) parameters.\nLikely "
        "cause: the parameter was created from integers (`jnp.array(1)`, "
        "`jnp.ones(n, jnp.int32)`), or a counter is stored as a trainable "
        "parameter.\nFix: create it as float (`jnp.asarray(x, "
        "jnp.float32)`); keep counters non-trainable (leave them out of "
        "`pax.parameters_method(...)`, or `pax.freeze_parameters`); or pass "
        f"`allow_int=True` to {api}.")


def _differentiate(jax_transform: Callable[..., Any], api: str,
                   fun: Callable[..., Any], has_aux: bool,
                   jax_kwargs: dict) -> Callable[..., Any]:
  if not callable(fun):
    raise TypeError(f"{api} expects a function, got {type(fun).__name__}.\n"
                    f"Fix: `{api}(loss_fn)(model, x, y)`.")
  holomorphic = bool(jax_kwargs.get("holomorphic", False))

  def params_fn(params, module, *args, **kwargs):
    out = fun(module.update_parameters(params), *args, **kwargs)
    _check_output(out, api, fun, has_aux, holomorphic)
    return out

  transformed = jax_transform(params_fn, has_aux=has_aux, **jax_kwargs)

  allow_int = bool(jax_kwargs.get("allow_int", False))

  @functools.wraps(fun)
  def wrapper(module, *args, **kwargs):
    checks.require_module(
        module, api, example=f"{api}({checks.fn_name(fun)})(model, x, y)")
    params = module.parameters()
    if not allow_int:
      _check_differentiable(params, api)
    return transformed(params, module, *args, **kwargs)

  return wrapper


# ----------------------------------------------------------------------------
# Public API.
# ----------------------------------------------------------------------------


def grad(fun: Callable[..., Any], *args: Any,
         **kwargs: Any) -> Callable[..., Any]:
  """Compute gradient with respect to trainable parameters of the first argument.

  The gradients have the structure of `module.parameters()`: a copy of the
  module whose non-trainable leaves are `None`.

  Example:

  >>> @pax.pure
  ... def loss_fn(model: pax.Linear, x, y):
  ...     y_hat = model(x)
  ...     loss = jnp.mean(jnp.square(y - y_hat))
  ...     return loss, (loss, model)
  ...
  >>> grad_fn = pax.grad(loss_fn, has_aux=True)
  >>> net = pax.Linear(1, 1)
  >>> x = jnp.ones((3, 1))
  >>> grads, (loss, net) = grad_fn(net, x, x)
  >>> grads.weight.shape
  (1, 1)

  Args:
    fun: `fun(module, *args, **kwargs)` returning a scalar float loss, or
      `(loss, aux)` with `has_aux=True`. Only the first argument is
      differentiated; it must be a `pax.Module`.
    *args: not supported (`jax.grad`'s positional `argnums`); a TypeError
      explains why.
    **kwargs: `has_aux`, and the `jax.grad` options `holomorphic`,
      `allow_int` and `reduce_axes`, passed through.

  Returns:
    `grad_fn(module, *args, **kwargs)` returning `grads`, or `(grads, aux)`
    with `has_aux=True`.
  """
  _check_jax_kwargs("pax.grad", args, kwargs)
  has_aux = bool(kwargs.pop("has_aux", False))
  return _differentiate(jax.grad, "pax.grad", fun, has_aux, kwargs)


def value_and_grad(func: Callable[..., Any], has_aux: bool = False,
                   **kwargs: Any) -> Callable[..., Tuple[Any, Any]]:
  """A PAX-compatible version of jax.value_and_grad.

  This version computes gradients w.r.t. trainable parameters of a PAX module.

  >>> def loss_fn(model, x, y):
  ...     return jnp.mean(jnp.square(model(x) - y))
  >>> net = pax.Linear(2, 1)
  >>> loss, grads = pax.value_and_grad(loss_fn)(net, jnp.ones((4, 2)),
  ...                                           jnp.zeros((4, 1)))
  >>> loss.shape, grads.weight.shape, grads.bias.shape
  ((), (2, 1), (1,))
  >>> net = net.update_parameters(
  ...     jax.tree_util.tree_map(lambda p, g: p - 0.1 * g,
  ...                            net.parameters(), grads))

  With `has_aux=True` the function returns `(loss, aux)` and the result is
  `((loss, aux), grads)`, as in `jax.value_and_grad`.

  Args:
    func: `func(module, *args, **kwargs)` returning a scalar float loss, or
      `(loss, aux)` with `has_aux=True`. The first argument must be a
      `pax.Module`.
    has_aux: whether `func` returns `(loss, aux)`.
    **kwargs: `jax.grad` options passed through: `holomorphic`, `allow_int`,
      `reduce_axes`.

  Returns:
    `fn(module, *args, **kwargs)` returning `(value, grads)`.
  """
  _check_jax_kwargs("pax.value_and_grad", (), kwargs)
  return _differentiate(jax.value_and_grad, "pax.value_and_grad", func,
                        has_aux, kwargs)


def _scan_length_error(xs: Any, axis: int, time_major: bool,
                       length: Optional[int], reason: str) -> ValueError:
  rows = []
  for path, leaf in jax.tree_util.tree_flatten_with_path(xs)[0][:8]:
    shape = tuple(jnp.shape(leaf))
    size = shape[axis] if len(shape) > axis else "-"
    rows.append(f"  xs{jax.tree_util.keystr(path)}: shape {shape}, "
                f"length {size}")
  axis_name = ("axis 0 (time_major=True)" if time_major else
               "axis 1 (time_major=False: inputs are [batch, time, ...])")
  lines = "\n".join(rows)
  return ValueError(
      f"pax.scan: {reason}. Every leaf of `xs` is scanned along {axis_name}"
      f"{'' if length is None else f' for length={length} steps'}:\n{lines}\n"
      "Likely cause: a batch-major input with the default time_major=True "
      "(or the reverse), or inputs of different sequence lengths.\nFix: pass "
      "`time_major=False` for [batch, time, ...] inputs, or give every leaf "
      "the same number of steps, e.g. "
      "`pax.scan(f, carry, xs, time_major=False)`.")


def _carry_error(problem: str) -> TypeError:
  return TypeError(
      f"pax.scan: {problem}.\nThe carry must keep its structure, shapes "
      "and dtypes from step to step (it is one fixed-size loop variable).\n"
      "Fix: return a carry built like `init` (cast with `.astype(...)`, "
      "keep the same modules and attributes); put values that grow or "
      "change shape in `y`, which scan stacks.")


def _checked_scan_body(func: Callable[..., Any]) -> Callable[..., Any]:
  """`func` with its returned carry checked against the carry it received."""

  def body(carry, x):
    out = func(carry, x)
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
      raise TypeError(
          f"pax.scan: `{checks.fn_name(func)}` must return a pair "
          f"`(carry, y)`, got {checks.describe(out)}.\nFix: `return "
          "new_carry, y` (use None for y if there is nothing to stack).")
    new_carry = out[0]
    old_flat, old_def = jax.tree_util.tree_flatten_with_path(carry)
    new_flat, new_def = jax.tree_util.tree_flatten_with_path(new_carry)
    if old_def != new_def:
      raise _carry_error(
          f"`{checks.fn_name(func)}` returned a carry whose structure "
          "differs from the carry it received: " +
          haiku_naming.first_difference(carry, new_carry))
    for (path, old), (_, new) in zip(old_flat, new_flat):
      old_type = (jnp.shape(old), jnp.result_type(old))
      new_type = (jnp.shape(new), jnp.result_type(new))
      if old_type != new_type:
        where = jax.tree_util.keystr(path) or "(the carry itself)"
        raise _carry_error(
            f"the carry leaf `{where}` enters `{checks.fn_name(func)}` with "
            f"shape {old_type[0]} {old_type[1]} and leaves it with shape "
            f"{new_type[0]} {new_type[1]}")
    return out

  return body


def scan(func: Callable[[C, Any], Tuple[C, Any]], init: C, xs: Any,
         length: Optional[int] = None, unroll: int = 1,
         time_major: bool = True) -> Tuple[C, Any]:
  """jax.lax.scan with an additional time_major=False mode.

  The semantics of scan are given roughly by this Python implementation:

  >>> def scan(f, init, xs, length=None):
  ...     if xs is None:
  ...         xs = [None] * length
  ...     carry = init
  ...     ys = []
  ...     for x in xs:
  ...         carry, y = f(carry, x)
  ...         ys.append(y)
  ...     return carry, np.stack(ys)

  With `time_major=False`, `xs` leaves are `[batch, time, ...]` and so are the
  `ys` leaves (outputs with fewer than two dimensions are returned as
  `[time, ...]`):

  >>> def step(h, x):
  ...     h = h + x
  ...     return h, h
  >>> xs = jnp.ones((2, 5, 3))  # batch 2, 5 steps
  >>> h, ys = pax.scan(step, jnp.zeros((2, 3)), xs, time_major=False)
  >>> h.shape, ys.shape
  ((2, 3), (2, 5, 3))
  >>> count, _ = pax.scan(lambda c, _: (c + 1, None), 0, None, length=4)
  >>> int(count)
  4

  Args:
    func: `func(carry, x) -> (carry, y)`.
    init: the initial carry.
    xs: a pytree of arrays scanned along the time axis, or None (then
      `length` is required).
    length: the number of steps (checked against `xs` when both are given).
    unroll: passed to `jax.lax.scan`.
    time_major: if False, the time axis of `xs` and `ys` is axis 1.

  Returns:
    `(final_carry, ys)`.
  """
  if not callable(func):
    raise TypeError(f"pax.scan expects a function `func(carry, x) -> "
                    f"(carry, y)`, got {type(func).__name__}.\nFix: "
                    "`pax.scan(lambda c, x: (c + x, c), 0.0, jnp.ones(3))`.")
  if length is not None and (not isinstance(length, int) or
                             isinstance(length, bool) or length < 0):
    raise TypeError(f"pax.scan: `length` must be a non-negative int, got "
                    f"{length!r}.\nFix: pass the number of steps, e.g. "
                    "`length=10`, or leave it out to take it from `xs`.")
  leaves = jax.tree_util.tree_leaves(xs)
  if not leaves:
    if length is None:
      raise ValueError(
          "pax.scan: `xs` is None (or has no arrays), so the number of steps "
          "is unknown.\nFix: pass `length`, e.g. "
          "`pax.scan(f, carry, None, length=10)`.")
  else:
    axis = 0 if time_major else 1
    if any(jnp.ndim(leaf) <= axis for leaf in leaves):
      raise _scan_length_error(
          xs, axis, time_major, length,
          f"some leaves of `xs` have no axis {axis} to scan over")
    sizes = {jnp.shape(leaf)[axis] for leaf in leaves}
    if len(sizes) > 1:
      raise _scan_length_error(
          xs, axis, time_major, length,
          "the leaves of `xs` have different lengths along the scanned axis")
    if length is not None and sizes != {length}:
      raise _scan_length_error(
          xs, axis, time_major, length,
          f"`length={length}` does not match the length of `xs` "
          f"({sizes.pop()})")
    if not time_major:
      xs = jax.tree_util.tree_map(lambda x: jnp.swapaxes(x, 0, 1), xs)
  carry, ys = jax.lax.scan(_checked_scan_body(func), init, xs, length=length,
                           unroll=unroll)
  if not time_major:
    ys = jax.tree_util.tree_map(
        lambda y: jnp.swapaxes(y, 0, 1) if jnp.ndim(y) >= 2 else y, ys)
  return carry, ys
