"""`BaseModule`: how a pax module is built, changed, compared and copied.

Every `pax.Module` subclass is registered with JAX once, when the class is
created (see `module_layout` for its pytree node); an instance is always of
exactly its own class. A module's constructor runs with mutation allowed
and fixes its layout at the end; afterwards only `pax.pure` may change it.
"""

import functools
import operator
import threading
import types
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import jax

from pax_haiku._src import context
from pax_haiku._src import deleted_arrays
from pax_haiku._src import module_layout as layout_lib


# ----------------------------------------------------------------------------
# Construction.
# ----------------------------------------------------------------------------


def _wrap_init(init: Callable[..., None]) -> Callable[..., None]:
  """Runs a user `__init__` with mutation allowed, then fixes the layout."""

  @functools.wraps(init)
  def __init__(self, *args, **kwargs):
    d = layout_lib.real_dict(self)
    if "_pax_constructing" in d:  # A nested super().__init__ call.
      init(self, *args, **kwargs)
      return
    for key, default in layout_lib.BASE_FIELDS:
      d.setdefault(key, default)
    d["_pax_constructing"] = True
    # Kept current while `__init__` runs, so the module can be flattened
    # (e.g. `self.parameters()`) before it is complete.
    layout_lib.refresh(self)
    try:
      with context.also_allow_mutation(self):
        init(self, *args, **kwargs)
    finally:
      del d["_pax_constructing"]
    layout_lib.refresh(self)
    check_instance_fields(self)

  __init__._pax_wrapped = True
  return __init__


# Name of the static field holding a module's mixed precision policy (set by
# `pax.apply_mp_policy` on modules that are not Haiku-backed).
MP_POLICY = "_pax_mp_policy"


class _PolicyCalls(threading.local):
  """Ids of the modules whose call runs under their policy in this thread."""

  def __init__(self):
    super().__init__()
    self.active = set()


_POLICY_CALLS = _PolicyCalls()


def _call_with_policy(module: "BaseModule", call: Callable[..., Any],
                      policy: Any, args: Any, kwargs: Any) -> Any:
  """PAX's mixed precision call: own arrays and inputs in compute dtype."""
  d = layout_lib.fields(module)
  children, layout = layout_lib.get_flat(module)
  swapped = {}
  for name in layout.data:
    value = d[name]
    if any(isinstance(l, BaseModule) for l in jax.tree_util.tree_leaves(
        value, is_leaf=layout_lib.is_module)):
      continue  # Submodules keep their own policies.
    swapped[name] = (value, policy.cast_to_compute(value))
  d.update((n, c) for n, (_, c) in swapped.items())
  layout_lib.set_flat(module, (layout_lib.children_of(d, layout.shape), layout))
  _POLICY_CALLS.active.add(id(module))
  try:
    args, kwargs = policy.cast_to_compute((args, kwargs))
    out = call(module, *args, **kwargs)
  finally:
    _POLICY_CALLS.active.discard(id(module))
    for name, (value, casted) in swapped.items():
      new = d.get(name, casted)
      d[name] = value if new is casted else policy.cast_to_param(new)
    layout_lib.refresh(module)
  return policy.cast_to_output(out)


def _adopt_init(module: "BaseModule", name: str, value: Any) -> None:
  """Sets a field from an `__init__` that pax has not wrapped yet.

  A class decorator such as `@dataclasses.dataclass` adds `__init__` after
  `__init_subclass__` ran: wrap it for later instances, and keep this
  instance's flat form up to date field by field.
  """
  cls = type(module)
  init = cls.__dict__.get("__init__")
  if init is not None and not getattr(init, "_pax_wrapped", False):
    cls.__init__ = _wrap_init(init)
  d = layout_lib.real_dict(module)
  for key, default in layout_lib.BASE_FIELDS:
    d.setdefault(key, default)
  d[name] = value
  layout_lib.refresh(module)


def _wrap_call(call: Callable[..., Any]) -> Callable[..., Any]:
  """Runs `call` under the module's mixed precision policy, if it has one."""

  @functools.wraps(call)
  def __call__(self, *args, **kwargs):
    # The `try` costs nothing until an exception: only then does it look
    # for arrays deleted by a donating step (`pax.jit_update`).
    try:
      policy = layout_lib.fields(self).get(MP_POLICY)
      if policy is None or id(self) in _POLICY_CALLS.active:
        return call(self, *args, **kwargs)
      return _call_with_policy(self, call, policy, args, kwargs)
    except RuntimeError as e:
      if not deleted_arrays.is_deleted_array_error(e):
        raise
      what = type(self).__name__
      leaves = deleted_arrays.deleted_leaves(self)
      if not leaves:
        what = f"an argument of {what}.__call__"
        leaves = deleted_arrays.deleted_leaves((args, kwargs))
      if not leaves:
        raise
      raise deleted_arrays.deleted_module_error(what, leaves) from e

  __call__._pax_wrapped = True
  return __call__


def _class_attribute_error(cls: type) -> Optional[str]:
  """Why instances of `cls` cannot be created, or None.

  As in PAX, a class attribute holding arrays or modules is an error when an
  instance is created (PAX programs may define such classes and never
  instantiate them).
  """
  for name, value in vars(cls).items():
    if name.startswith("__") or isinstance(
        value, (types.FunctionType, classmethod, staticmethod, property)):
      continue
    leaves = jax.tree_util.tree_leaves(value, is_leaf=layout_lib.is_module)
    if any(layout_lib.is_data_leaf(leaf) for leaf in leaves):
      return (
          f"Class attribute `{cls.__name__}.{name}` holds a JAX array or a "
          "module. Class attributes are shared by every instance and are not "
          "part of the module's pytree, so they would be neither trained nor "
          "traced.\nFix: assign it in `__init__`, e.g. "
          f"`self.{name} = ...`.")
  return None


def check_instance_fields(module: "BaseModule") -> None:
  """PAX's construction checks: class attributes, shared modules/arrays."""
  for klass in type(module).__mro__:
    error = klass.__dict__.get("_pax_class_error")
    if error:
      raise ValueError(error)
  check_no_shared_modules(module)
  check_no_shared_arrays(module)


def immutable_error(module: Any, action: str) -> ValueError:
  return ValueError(
      f"Cannot {action} of `{type(module).__name__}`: pax modules are "
      "immutable outside `pax.pure` (and inside a JAX transform nested deeper "
      "than the `pax.pure` call that owns the module).\nFix: do the update "
      "inside a function decorated with `pax.pure`, e.g.\n"
      "    @pax.pure\n    def step(model, x):\n        y = model(x)\n"
      "        return model, y\n"
      "or use `model, y = pax.purecall(model, x)`.")


class BaseModule(layout_lib.ModuleSlots):
  """The pytree side of `pax.Module`: fields, immutability, identity.

  Subclass `pax.Module`, not this class.
  """
  __slots__ = ()

  _pax_custom_getattr: bool = False

  def __init_subclass__(cls, **kwargs):
    super().__init_subclass__(**kwargs)
    init = cls.__dict__.get("__init__")
    if init is not None and not getattr(init, "_pax_wrapped", False):
      cls.__init__ = _wrap_init(init)
    call = cls.__dict__.get("__call__")
    if call is not None and not getattr(call, "_pax_wrapped", False):
      cls.__call__ = _wrap_call(call)
    # A class's own `__getattr__` would answer before the lazily filled
    # `__dict__` does.
    cls._pax_custom_getattr = (
        hasattr(cls, "__getattr__") or
        cls.__getattribute__ is not object.__getattribute__)
    cls._pax_class_error = _class_attribute_error(cls)
    if ("__slots__" in cls.__dict__ and
        not cls.__module__.startswith("pax_haiku.")):
      cls._pax_class_error = (
          f"`{cls.__name__}` defines `__slots__`, which pax modules do not "
          "support (as in PAX): fields must live in the instance `__dict__` "
          f"to be part of the pytree.\nFix: remove `__slots__` from "
          f"`{cls.__name__}`.")
    jax.tree_util.register_pytree_with_keys(
        cls, layout_lib.flatten_with_keys, layout_lib.unflatten,
        flatten_func=operator.attrgetter("_pax_flat"))

  def __init__(self, *, training: bool = True, name: Optional[str] = None):
    self._training = training
    self._name = name

  @property
  def __dict__(self) -> Dict[str, Any]:  # pylint: disable=invalid-name
    return layout_lib.fields(self)

  def __setattr__(self, name: str, value: Any) -> None:
    if not context.is_mutable(self):
      try:
        layout_lib.get_flat(self)
      except AttributeError:
        # An `__init__` added after the class was created (`@dataclass`).
        _adopt_init(self, name, value)
        return
      raise immutable_error(self, f"set attribute `{name}`")
    layout_lib.set_field(self, name, value)

  def __delattr__(self, name: str) -> None:
    if not context.is_mutable(self):
      raise immutable_error(self, f"delete attribute `{name}`")
    d = layout_lib.fields(self)
    if name not in d:
      raise AttributeError(name)
    del d[name]
    layout_lib.refresh(self)

  def __reduce__(self):
    return layout_lib.rebuild, (type(self), layout_lib.field_values(self))

  def __eq__(self, other: Any) -> bool:
    if self is other:
      return True
    if type(self) is not type(other):
      return False
    a_leaves, a_def = jax.tree_util.tree_flatten(self)
    b_leaves, b_def = jax.tree_util.tree_flatten(other)
    return a_def == b_def and all(a is b for a, b in zip(a_leaves, b_leaves))

  def __ne__(self, other: Any) -> bool:
    return not self.__eq__(other)

  def __hash__(self) -> int:
    leaves, treedef = jax.tree_util.tree_flatten(self)
    return hash((treedef, tuple(
        (getattr(x, "shape", None), str(getattr(x, "dtype", None)))
        for x in leaves)))

  def _pax_scope_name(self) -> Optional[str]:
    """The Haiku scope name of this module if not its name or class name."""
    return None

  def _pax_leaf_key(self, field: str, path: str,
                    is_root: bool) -> Optional[Tuple[str, str, str]]:
    """`(bundle, name, role)` of a data field's leaf; None: pax's naming."""
    del field, path, is_root
    return None


BaseModule.__init__ = _wrap_init(BaseModule.__init__)


def module_class(module: BaseModule) -> type:
  """The class of `module`: `type(module)` (kept for older code)."""
  return type(module)


def iter_modules(tree: Any) -> Iterator[BaseModule]:
  """Yields every module reachable in `tree` (depth-first, parents first)."""
  for leaf in jax.tree_util.tree_leaves(tree, is_leaf=layout_lib.is_module):
    if isinstance(leaf, BaseModule):
      yield leaf
      yield from iter_modules(layout_lib.get_flat(leaf)[0])


def submodules(module: BaseModule) -> List[BaseModule]:
  """The direct submodules, in attribute order."""
  return [m for m in jax.tree_util.tree_leaves(
      layout_lib.get_flat(module)[0], is_leaf=layout_lib.is_module) if isinstance(m, BaseModule)]


def check_no_shared_modules(tree: Any) -> List[BaseModule]:
  """Returns every module in `tree`; raises if one is reachable twice."""
  seen = {}
  for m in iter_modules(tree):
    if id(m) in seen:
      raise ValueError(
          f"The module `{m!r}` is reachable twice in the module tree. Shared "
          "modules would be flattened twice and trained as two copies.\n"
          "Fix: create separate modules, or call the same module twice "
          "from the parent's `__call__` instead of storing it twice.")
    seen[id(m)] = m
  return list(seen.values())


def check_no_shared_arrays(tree: Any) -> None:
  """Raises ValueError if one array object is held by two modules (PAX).

  PAX forbids shared weights: each copy would be trained separately. One
  module may hold an array twice (a library layer starting two buffers from
  the same value).
  """
  owner: Dict[int, int] = {}
  for module in iter_modules(tree):
    for leaf in jax.tree_util.tree_leaves(layout_lib.get_flat(module)[0],
                                          is_leaf=layout_lib.is_module):
      if isinstance(leaf, BaseModule):
        continue
      if owner.setdefault(id(leaf), id(module)) != id(module):
        raise ValueError(
            f"An array (shape {getattr(leaf, 'shape', None)}, dtype "
            f"{getattr(leaf, 'dtype', None)}) is held by two modules of the "
            "tree. Shared weights would be trained as two copies.\nFix: "
            "give each module its own array (e.g. `w.copy()`), or call the "
            "same module twice instead of sharing its weights.")


def require_module(fn_name: str, module: Any) -> None:
  if not isinstance(module, BaseModule):
    raise TypeError(
        f"{fn_name} expects a pax.Module, got {type(module).__name__}.\n"
        f"Fix: pass a module, e.g. `{fn_name}(pax.Linear(2, 2))`; wrap Haiku "
        "code with `pax.from_haiku(f)(sample_input)`.")
