"""The pax -> Haiku direction of the bridge: pax modules as Haiku code.

- `to_haiku(module)` returns an `hk.TransformedWithState` in which every leaf
  of the module is read with `hk.get_parameter` / `hk.get_state` (under its
  Haiku name, see `haiku_naming`), the module runs, and new state is written
  back with `hk.set_state`.
- `haiku_call(module, x)` does the same inline inside any Haiku transform, so
  pax code drops into an existing Haiku codebase.

The Haiku -> pax direction (`from_haiku`, `HaikuModule`) is in
`haiku_bridge.py`.
"""

from typing import Any, Callable

import haiku as hk
import jax
import jax.numpy as jnp

from pax_haiku._src import haiku_compat
from pax_haiku._src import haiku_naming
from pax_haiku._src import module as module_lib
from pax_haiku._src import module_base
from pax_haiku._src import pure as pure_lib


def _const(value: Any) -> Callable[[Any, Any], Any]:
  # The initializer of every leaf: Haiku's `init` then returns exactly the
  # module's current params/state.
  return lambda shape, dtype: value


def _in_scope(current: str, bundle: str) -> str:
  """The Haiku path of `bundle` when the caller runs in module scope `current`.

  `current` is `hk.experimental.current_name()` ("~" at the top level); the
  module's own paths are then nested below it as Haiku nests submodules.
  """
  if current == "~":
    return bundle
  return current if bundle == "~" else f"{current}/~/{bundle}"


def haiku_call(module: module_lib.Module, *args: Any, **kwargs: Any) -> Any:
  """Calls a pax module inside a Haiku transform, through Haiku's params/state.

  Every leaf is read with `hk.get_parameter`/`hk.get_state` under its Haiku
  name (prefixed by the current Haiku module scope), initialised to the
  module's current value; changed state is written with `hk.set_state`.

  >>> net = pax.Linear(2, 3)
  >>> def f(x):
  ...     return pax.haiku_call(net, x) * 2
  >>> params, state = hk.transform_with_state(f).init(None, jnp.ones((1, 2)))
  >>> params["linear"]["w"] is net.weight
  True
  """
  module_base.require_module("pax.haiku_call", module)
  if not haiku_compat.inside_transform():
    raise ValueError("pax.haiku_call must run inside a Haiku transform.\n"
                     "Fix: use `pax.to_haiku(module)` to get one.")
  leaves, treedef = jax.tree_util.tree_flatten(module)
  info = haiku_naming.tree_info(treedef, leaves)
  current = hk.experimental.current_name()
  fetched = []
  for leaf, spec in zip(leaves, info.specs):
    get = (hk.get_parameter if spec.role == haiku_naming.PARAMS
           else hk.get_state)
    with haiku_compat.bundle_scope(_in_scope(current, spec.bundle)):
      fetched.append(get(spec.name, jnp.shape(leaf), jnp.result_type(leaf),
                         init=_const(leaf)))
  new_module, out = pure_lib.purecall(treedef.unflatten(fetched), *args,
                                      **kwargs)
  new_leaves, new_treedef = jax.tree_util.tree_flatten(new_module)
  if new_treedef != treedef:
    raise ValueError(
        "The module changed its structure when called inside a Haiku "
        "transform (e.g. a lazy module creating parameters).\nFix: "
        "initialise it first: `module, _ = pax.purecall(module, x)`.")
  for old, new, spec in zip(fetched, new_leaves, info.specs):
    if spec.role == haiku_naming.STATE and new is not old:
      with haiku_compat.bundle_scope(_in_scope(current, spec.bundle)):
        hk.set_state(spec.name, new)
  return out


def to_haiku(module: module_lib.Module) -> hk.TransformedWithState:
  """Returns `hk.transform_with_state` of calling `module`.

  `init(rng, *args)` returns exactly `(module.params, module.state)`;
  `apply(params, state, rng, *args)` returns `(module(*args), new_state)`
  (state advances as `pax.purecall(module, *args)` would advance it).

  >>> net = pax.Linear(2, 3)
  >>> f = pax.to_haiku(net)
  >>> params, state = f.init(None, jnp.ones((1, 2)))
  >>> y, _ = f.apply(params, state, None, jnp.ones((1, 2)))
  >>> bool((y == net(jnp.ones((1, 2)))).all())
  True
  """
  module_base.require_module("pax.to_haiku", module)
  if not callable(module):
    raise TypeError(f"pax.to_haiku: `{module!r}` defines no `__call__`.")

  def forward(*args, **kwargs):
    return haiku_call(module, *args, **kwargs)

  forward.__name__ = haiku_naming.scope_name(module)
  return hk.transform_with_state(forward)
