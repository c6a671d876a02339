"""`pax.jit_update`: the recommended jitted update step, donating buffers.

`jax.jit(pax.build_update_fn(loss_fn))` keeps the model and optimizer it is
given alive while it computes the new ones into fresh buffers: two copies of
the parameters and the optimizer state per step. A donating step
(`jax.jit(..., donate_argnums=...)`) lets XLA write the new model and
optimizer into the buffers of the old ones: one copy in memory, and faster
steps (on CPU, 0.75-0.82x raw Haiku's plain step on a 48-layer MLP;
BENCHMARKS.md, "Donated steps"). `pax.jit_update` builds that step and turns
the one new way to fail, using a module after the step consumed it, into a
clear error.
"""

import functools
from typing import Any, Callable, Optional, Sequence, Tuple

import jax

from pax_haiku._src import checks
from pax_haiku._src import deleted_arrays
from pax_haiku._src import module as module_lib

_API = "pax.jit_update"

# `build_update_fn` tags the functions it returns with the positions of the
# model and the optimizer, so `jit_update` donates exactly those.
DONATE_ARGNUMS_ATTR = "_pax_donate_argnums"


def _holds_modules(value: Any) -> bool:
  """A module, or a non-empty tuple/list of modules (a scan carry)."""
  if isinstance(value, module_lib.Module):
    return True
  return (isinstance(value, (tuple, list)) and bool(value) and
          all(isinstance(v, module_lib.Module) for v in value))


def _arg_name(i: int, value: Any) -> str:
  return f"argument {i} ({checks.describe(value)})"


def _not_modules_error(i: int, value: Any,
                       argnums: Tuple[int, ...]) -> TypeError:
  others = tuple(j for j in argnums if j != i)
  return TypeError(
      f"{_API}: the step donates arguments {argnums} (their arrays are "
      f"reused for the outputs and deleted), but argument {i} is "
      f"{checks.describe(value)}, not a pax module.\nLikely cause: a step "
      "whose model and optimizer are not its first two arguments (e.g. "
      "`build_update_fn(..., scan_mode=True)` takes the pair `(model, "
      "optimizer)` first), so a batch would be deleted.\nFix: pass the "
      "positions of the model and the optimizer: `pax.jit_update(update_fn, "
      f"donate_argnums={others or (0,)})`.")


def _shared_leaves_error(args: Sequence[Any],
                         argnums: Tuple[int, ...]) -> Optional[ValueError]:
  """The error for an array passed twice among the donated arguments."""
  seen = {}
  for i in argnums:
    for path, leaf in jax.tree_util.tree_leaves_with_path(args[i]):
      if not isinstance(leaf, jax.Array):
        continue
      where = f"argument {i} at `{jax.tree_util.keystr(path)}`"
      if id(leaf) in seen:
        return ValueError(
            f"{_API}: one array ({leaf.dtype}{list(leaf.shape)}) is both "
            f"{seen[id(leaf)]} and {where}; a donated buffer can be reused "
            "only once.\nLikely cause: an optimizer whose optax `init` kept "
            "the parameters themselves in its state instead of copies.\n"
            "Fix: copy the optimizer's arrays once, after building it: "
            "`optimizer = jax.tree_util.tree_map(jnp.copy, optimizer)`.")
      seen[id(leaf)] = where
  return None


def _call_error(error: BaseException, args: Sequence[Any],
                argnums: Tuple[int, ...]) -> Optional[Exception]:
  """A clear error for a failed call, or None to re-raise `error` as is."""
  if "same buffer twice" in str(error):
    return _shared_leaves_error(args, argnums)
  if deleted_arrays.is_deleted_array_error(error):
    for i, value in enumerate(args):
      leaves = deleted_arrays.deleted_leaves(value)
      if leaves:
        return deleted_arrays.deleted_module_error(
            f"{_API}: {_arg_name(i, value)}", leaves)
  return None


def jit_update(update_fn: Callable[..., Any], *, donate: bool = True,
               donate_argnums: Optional[Sequence[int]] = None,
               **jit_kwargs: Any) -> Callable[..., Any]:
  """`jax.jit(update_fn)` donating the model and the optimizer.

  The recommended way to run `pax.build_update_fn` steps from Python:

  >>> def loss_fn(model, x, y):
  ...     loss = jnp.mean(jnp.square(model(x) - y))
  ...     return loss, (loss, model)
  >>> update_fn = pax.jit_update(pax.build_update_fn(loss_fn))
  >>> net = pax.Linear(2, 2)
  >>> optimizer = pax.from_optax(optax.adam(1e-3))(net.parameters())
  >>> x, y = jnp.ones((8, 2)), jnp.zeros((8, 2))
  >>> for _ in range(3):
  ...     net, optimizer, loss = update_fn(net, optimizer, x, y)

  The step *consumes* the model and the optimizer it is given: XLA writes
  the new ones into their buffers, so parameters and optimizer state exist
  once in memory (not twice, as with `jax.jit(pax.build_update_fn(...))`),
  and steps run faster. JAX marks the arrays it was given deleted; using
  them again is a clear error:

  >>> old = net
  >>> net, optimizer, loss = update_fn(net, optimizer, x, y)
  >>> old(x)
  Traceback (most recent call last):
    ...
  ValueError: Linear holds 2 deleted arrays (...)...

  Every array the given model and optimizer hold is consumed (except any
  the step never reads, which JAX does not pass to XLA, e.g. BatchNorm's
  debiased averages: don't rely on either), including where other objects
  share it: `model.parameters()`, `model.copy()`,
  `model.replace(...)` and the like return modules holding the *same*
  arrays. The optimizer from `pax.from_optax(tx)(model.parameters())`
  holds its own arrays (optax's `init` builds new ones), so it does not
  share the model's; an optimizer whose state holds the parameters
  themselves is a clear error naming the fix. To keep a model from before
  a step, copy its arrays: `saved = jax.tree_util.tree_map(jnp.copy,
  model)`. The batch and other arguments are never donated.

  `build_update_fn(..., scan_mode=True)` steps take the pair `(model,
  optimizer)` first; `jit_update` donates that pair:

  >>> def batch_loss(model, batch):
  ...     return loss_fn(model, *batch)
  >>> scan_step = pax.jit_update(pax.build_update_fn(batch_loss,
  ...                                                scan_mode=True))
  >>> (net, optimizer), loss = scan_step((net, optimizer), (x, y))

  Any other function whose leading arguments are the model and the
  optimizer works too (e.g. a `jax.lax.scan` of many steps); donated
  arrays keep their shardings when the outputs are laid out as the inputs
  (`out_shardings=pax.sharding.shardings_of(...)`).

  Args:
    update_fn: `pax.build_update_fn(loss_fn)` (or with `scan_mode=True`),
      or any `fn(model, optimizer, *inputs) -> (model, optimizer, ...)`.
    donate: donate the model and optimizer (False: a plain `jax.jit`, with
      the same checks and errors).
    donate_argnums: positions of the donated arguments, each a module or a
      tuple of modules (checked at every call: a batch is never donated).
      Default: the model and optimizer of a `build_update_fn` step, else
      `(0, 1)`.
    **jit_kwargs: passed to `jax.jit` (e.g. `out_shardings`,
      `static_argnums`).

  Returns:
    The jitted step, called like `update_fn`. `.lower(...)` and
    `.trace(...)` are `jax.jit`'s; `.donate_argnums` says what it donates.
  """
  if not callable(update_fn):
    raise TypeError(
        f"{_API} expects an update function, got "
        f"{type(update_fn).__name__}.\nFix: `update_fn = pax.jit_update("
        "pax.build_update_fn(loss_fn))`.")
  if "donate_argnames" in jit_kwargs:
    raise TypeError(
        f"{_API}: donated arguments are positional (the model and the "
        "optimizer), not named.\nFix: pass them by position and use "
        "`donate_argnums=(0, 1)`.")
  if donate_argnums is None:
    donate_argnums = getattr(update_fn, DONATE_ARGNUMS_ATTR, (0, 1))
  if isinstance(donate_argnums, int):
    donate_argnums = (donate_argnums,)
  argnums = tuple(donate_argnums)
  if not argnums or not all(isinstance(i, int) and i >= 0 for i in argnums):
    raise TypeError(
        f"{_API}: donate_argnums must be non-negative argument positions, "
        f"got {donate_argnums!r}.\nFix: e.g. `donate_argnums=(0, 1)` for "
        "`update_fn(model, optimizer, x)`; `donate=False` donates nothing.")
  jitted = jax.jit(update_fn, donate_argnums=argnums if donate else (),
                   **jit_kwargs)
  needed = max(argnums) + 1

  @functools.wraps(update_fn)
  def step(*args, **kwargs):
    if donate:
      if len(args) < needed:
        raise TypeError(
            f"{_API}: the step donates arguments {argnums} (the model and "
            f"the optimizer), but got {len(args)} positional argument(s).\n"
            "Fix: pass the model and the optimizer by position: "
            "`update_fn(model, optimizer, x, y)`.")
      for i in argnums:
        if not _holds_modules(args[i]):
          raise _not_modules_error(i, args[i], argnums)
    try:
      return jitted(*args, **kwargs)
    except (RuntimeError, ValueError) as e:
      error = _call_error(e, args, argnums)
      if error is None:
        raise
      raise error from e

  step.lower = jitted.lower
  step.trace = jitted.trace
  step.donate_argnums = argnums if donate else ()
  return step
