"""The functional API on modules: parameters, modes, freezing, structure."""

from typing import Any, List, Optional, Tuple, TypeVar

import jax
import jax.numpy as jnp

from pax_haiku._src import context
from pax_haiku._src import haiku_naming as naming
from pax_haiku._src import module_base as base
from pax_haiku._src import module_layout

T = TypeVar("T", bound=base.BaseModule)


def structure(module: base.BaseModule) -> Tuple[Any, Any, Optional[List[Any]]]:
  """`(treedef, TreeInfo, leaves)` of `module`; leaves is None if cached.

  Outside `pax.pure` modules never change (pure mutates fresh copies), so
  the treedef and naming info are cached on the instance: `parameters()` of
  a frozen, all-trainable model then costs a slot read instead of a flatten
  and a treedef hash.
  """
  memo = module_layout.get_memo(module)
  if memo is not None:
    return memo[0], memo[1], None
  leaves, treedef = jax.tree_util.tree_flatten(module)
  info = naming.tree_info(treedef, leaves)
  if context.nothing_mutable():
    module_layout.set_memo(module, (treedef, info))
  return treedef, info, leaves


def select_parameters(module: T) -> T:
  """A copy of `module` whose non-trainable leaves are `None`.

  >>> p = pax.select_parameters(pax.BatchNorm1D(3))
  >>> sorted(k for k, v in vars(p).items() if v is not None and hasattr(v, "shape"))
  ['offset', 'scale']
  """
  base.require_module("pax.select_parameters", module)
  treedef, info, leaves = structure(module)
  if info.all_trainable:  # Modules are immutable: no copy needed.
    return module
  if leaves is None:
    leaves = jax.tree_util.tree_leaves(module)
  return treedef.unflatten(
      [x if t else None for x, t in zip(leaves, info.trainable)])


def update_parameters(module: T, *, params: Any) -> T:
  """Returns `module` with trainable leaves replaced by those of `params`.

  >>> net = pax.Linear(2, 2)
  >>> zero = jax.tree_util.tree_map(jnp.zeros_like, net.parameters())
  >>> float(pax.update_parameters(net, params=zero).weight.sum())
  0.0

  Args:
    module: a pax module.
    params: the output of `module.parameters()` (e.g. after an optimizer step),
      a module of the same structure, or a Haiku params mapping.

  Returns:
    A new module.
  """
  base.require_module("pax.update_parameters", module)
  if not isinstance(params, base.BaseModule):
    if hasattr(params, "keys"):
      return naming.update_from_haiku(module, params, role=naming.PARAMS)
    raise TypeError(
        "update_parameters expects `params` to be the output of "
        "`module.parameters()` or a Haiku params mapping, got "
        f"{type(params).__name__}.")
  treedef, info, leaves = structure(module)
  p_leaves, p_treedef = jax.tree_util.tree_flatten(params)
  if info.all_trainable and p_treedef == treedef:
    return params  # Same structure, every leaf replaced.
  if leaves is None:
    leaves = jax.tree_util.tree_leaves(module)
  if p_treedef == info.params_treedef:
    it = iter(p_leaves)
    new = [next(it) if t else x for x, t in zip(leaves, info.trainable)]
  elif p_treedef == treedef:
    new = [p if t else x for x, p, t in zip(leaves, p_leaves, info.trainable)]
  else:
    raise ValueError(
        "update_parameters: `params` does not have the structure of "
        "`module.parameters()`: "
        f"{naming.first_difference(select_parameters(module), params)}"
        "\nFix: pass `module.parameters()` (or gradients/updates of it) "
        "computed from this same module.")
  return treedef.unflatten(new)


def map_modules(module: T, fn: Any) -> T:
  """Applies `fn` to every submodule (bottom-up), then to the module itself.

  `fn` gets a fresh copy it may change with `module_base.set_fields`.
  """
  def rec(x):
    return map_modules(x, fn) if isinstance(x, base.BaseModule) else x

  leaves, treedef = jax.tree_util.tree_flatten(module)
  copy = treedef.unflatten(leaves)
  layout = module_layout.flat(copy)[1]
  d = module_layout.fields(copy)
  new = {name: jax.tree_util.tree_map(rec, d[name], is_leaf=module_layout.is_module)
         for name in layout.data}
  if new:
    module_layout.set_fields(copy, **new)
  return fn(copy)


def _set_field_everywhere(module: T, field: str, value: Any) -> T:
  def fn(m):
    module_layout.set_fields(m, **{field: value})
    return m
  return map_modules(module, fn)


def enable_train_mode(module: T) -> T:
  """A copy of `module` (whole tree) in training mode.

  >>> pax.enable_train_mode(pax.Dropout(0.5).eval()).training
  True
  """
  base.require_module("pax.enable_train_mode", module)
  return _set_field_everywhere(module, "_training", True)


def enable_eval_mode(module: T) -> T:
  """A copy of `module` (whole tree) in evaluation mode.

  >>> pax.enable_eval_mode(pax.Dropout(0.5)).training
  False
  """
  base.require_module("pax.enable_eval_mode", module)
  return _set_field_everywhere(module, "_training", False)


def freeze_parameters(module: T) -> T:
  """A copy whose `parameters()` holds no leaves (nothing is trained).

  >>> net = pax.freeze_parameters(pax.Linear(2, 2))
  >>> jax.tree_util.tree_leaves(net.parameters())
  []
  """
  base.require_module("pax.freeze_parameters", module)
  return _set_field_everywhere(module, "_frozen", True)


def unfreeze_parameters(module: T, *, origin: Optional[T] = None) -> T:
  """Undoes `freeze_parameters`.

  >>> net = pax.unfreeze_parameters(pax.freeze_parameters(pax.Linear(2, 2)))
  >>> len(jax.tree_util.tree_leaves(net.parameters()))
  2

  With `origin` (PAX's form), the result takes `module`'s leaves in
  `origin`'s structure: what was trainable in `origin` is trainable again,
  what was frozen stays frozen.

  >>> inner = pax.freeze_parameters(pax.Linear(2, 2))
  >>> net = pax.Sequential(inner, pax.Linear(2, 2))
  >>> thawed = pax.unfreeze_parameters(pax.freeze_parameters(net), origin=net)
  >>> len(jax.tree_util.tree_leaves(thawed.parameters()))
  2

  Args:
    module: a module (usually from `freeze_parameters`).
    origin: the module before it was frozen; default: unfreeze everything.

  Returns:
    A new module.
  """
  base.require_module("pax.unfreeze_parameters", module)
  if origin is None:
    return _set_field_everywhere(module, "_frozen", False)
  base.require_module("pax.unfreeze_parameters(origin=...)", origin)
  leaves = jax.tree_util.tree_leaves(module)
  o_leaves, o_treedef = jax.tree_util.tree_flatten(origin)
  same = len(leaves) == len(o_leaves) and all(
      jnp.shape(a) == jnp.shape(b) for a, b in zip(leaves, o_leaves))
  if not same:
    raise ValueError(
        "pax.unfreeze_parameters: `origin` is not the module that was frozen "
        f"(its leaves differ: {naming.first_difference(module, origin)}).\n"
        "Fix: pass the module as it was before `pax.freeze_parameters`, e.g. "
        "`pax.unfreeze_parameters(frozen, origin=model)`.")
  return o_treedef.unflatten(leaves)


def assert_structure_equal(a: Any, b: Any) -> None:
  """Raises ValueError naming the first difference if `a`, `b` differ in tree
  structure (module classes, fields, static values, leaf positions).

  >>> pax.assert_structure_equal(pax.Linear(2, 3), pax.Linear(2, 3))
  """
  if jax.tree_util.tree_structure(a) != jax.tree_util.tree_structure(b):
    raise ValueError("Structures differ: " + naming.first_difference(a, b))
