"""The error for a module whose arrays were deleted (donated to a step).

A donating update step (`pax.jit_update`) hands the buffers of the model and
the optimizer it is given to XLA, which reuses them for the outputs; JAX then
marks the given arrays deleted. Using them again raises JAX's bare
`RuntimeError: Array has been deleted with shape=float32[64,64]`. pax turns
that into an error naming what happened and the fix, in the two places that
cost nothing until something fails: a module's `__call__` and the step
returned by `pax.jit_update`.

>>> from pax_haiku._src import deleted_arrays
>>> x = jnp.ones(3)
>>> deleted_arrays.deleted_leaves(x)
[]
>>> x.delete()
>>> deleted_arrays.describe_deleted(deleted_arrays.deleted_leaves(x))
'1 deleted array (float32[3])'
"""

from typing import Any, List

import jax

# The start of JAX's message for an operation on a deleted array.
_JAX_DELETED = "has been deleted"

FIX = (
    "Fix: use the module it returned (the model and optimizer the step "
    "returned), and drop the old references:\n"
    "    model, optimizer, aux = update_fn(model, optimizer, x, y)\n"
    "To keep a copy of the model from before a step, copy its arrays first: "
    "`saved = jax.tree_util.tree_map(jnp.copy, model)`; or build a step that "
    "does not donate: `pax.jit_update(update_fn, donate=False)`.")


def is_deleted_array_error(error: BaseException) -> bool:
  """Whether `error` is JAX's error for a deleted (donated) array."""
  return _JAX_DELETED in str(error) or "deleted or donated" in str(error)


def deleted_leaves(tree: Any) -> List[jax.Array]:
  """The deleted `jax.Array` leaves of `tree`."""
  return [x for x in jax.tree_util.tree_leaves(tree)
          if isinstance(x, jax.Array) and x.is_deleted()]


def describe_deleted(leaves: List[jax.Array]) -> str:
  """`'2 deleted arrays (float32[64,64], float32[64])'`, at most 3 shown."""
  shown = ", ".join(f"{x.dtype}[{','.join(map(str, x.shape))}]"
                    for x in leaves[:3])
  more = ", ..." if len(leaves) > 3 else ""
  s = "" if len(leaves) == 1 else "s"
  return f"{len(leaves)} deleted array{s} ({shown}{more})"


def deleted_module_error(what: str, leaves: List[jax.Array]) -> ValueError:
  """The error for using `what` (a module or argument) after donation."""
  return ValueError(
      f"{what} holds {describe_deleted(leaves)}.\nLikely cause: this module "
      "was passed to a donating update step (`pax.jit_update`), which "
      "reuses the buffers of the model and optimizer it is given for the "
      "ones it returns.\n" + FIX)
