"""How a pax module is a JAX pytree node.

Every `pax.Module` subclass is registered with JAX once, when the class is
created; an instance is always of exactly its own class. A module's
attributes are split into *data fields* (arrays, submodules, containers of
them: the node's children) and *static fields* (everything else). Both live
in the instance's `__dict__`, and the module also keeps its flattened form,
`(children, layout)`, in a slot:

- flattening reads that slot with a C `operator.attrgetter`, so JAX's C++
  pytree code runs no Python for a module node;
- the `Layout` (class, data field names, static values) is the node's aux
  data, so jit's caches tell apart modules whose static values differ and
  reuse one entry for modules that only differ in array values;
- unflattening creates the object and stores `(children, layout)`; its
  `__dict__` is filled from them on first attribute access. A pytree
  round trip (every jitted call) then costs what JAX charges for
  dataclass nodes.

Nothing is registered or cached per static value: a `Layout` lives as long
as the modules and treedefs holding it.
"""

import dataclasses
import functools
import operator
import threading
import types
import weakref
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import jax
import numpy as np

from pax_haiku._src import context

ARRAY_TYPES = (jax.Array, np.ndarray)
# Fields every module has; `pax.Module.__init__` takes the first two.
BASE_FIELDS = (("_training", True), ("_name", None), ("_frozen", False))


@dataclasses.dataclass(frozen=True, eq=False)
class Shape:
  """What modules of one class with the same attribute names share.

  Interned (see `_shape`), so layouts compare shapes by identity.

  Attributes:
    cls: the module's class.
    data: names of the data fields, in attribute order (the node's children).
    static: names of the static fields, in attribute order.
    mixed: the data fields whose values also hold non-array leaves (PAX's
      "mixed" attributes, e.g. `[pax.Linear(2, 2), jax.nn.relu]`); their
      child holds those leaves wrapped in `ValueNode`s.
    order: every field name in attribute order (of the first module of this
      shape), mapped to None; `__dict__` is filled from it first so that it
      keeps that order.
    eager: fill `__dict__` when unflattening, not on first access: the class
      has an attribute named like a field (which attribute lookup would find
      before asking for the field) or its own `__getattr__`.
  """
  cls: type
  data: Tuple[str, ...]
  static: Tuple[str, ...]
  mixed: Tuple[str, ...]
  order: Dict[str, None] = dataclasses.field(repr=False)
  eager: bool = dataclasses.field(repr=False)

  def __reduce__(self):
    # Copies and unpickled treedefs must find the interned shape, since
    # layouts compare shapes by identity.
    return _shape, (self.cls, self.data, self.static, tuple(self.order))


_SHAPES: "weakref.WeakValueDictionary[Any, Shape]" = (
    weakref.WeakValueDictionary())


def _shape(cls: type, data: Tuple[str, ...], static: Tuple[str, ...],
           mixed: Tuple[str, ...], order: Tuple[str, ...]) -> Shape:
  # Not keyed by `order`: modules whose data and static names agree share a
  # treedef however their attributes interleave (a lazily built module and
  # an eagerly built one, say); `__dict__` then takes the first one's order.
  key = (cls, data, static, mixed)
  shape = _SHAPES.get(key)
  if shape is None:
    eager = cls._pax_custom_getattr or any(hasattr(cls, n) for n in order)
    shape = Shape(cls, data, static, mixed, dict.fromkeys(order), eager)
    _SHAPES[key] = shape
  return shape


@dataclasses.dataclass(frozen=True, eq=False)
class Layout:
  """The aux data of a module node: what its treedef knows about it.

  Two layouts are equal when they have the same shape and their static
  values are equal and of the same types (so `1`, `1.0` and `True` differ).
  JAX compares the layouts of a call's arguments with those of cached calls
  (an identical object is equal without a call). The comparison is written
  out rather than generated: it must accept unhashable static values and
  tell apart equal values of different types, and layouts are created for
  every module, so they hold only a shape and a tuple.

  Attributes:
    shape: the class and field names.
    values: the static values, in the order of `shape.static`.
  """
  __slots__ = ("shape", "values")
  shape: Shape
  values: Tuple[Any, ...]

  @property
  def data(self) -> Tuple[str, ...]:
    return self.shape.data

  def __eq__(self, other: Any) -> bool:
    if self is other:
      return True
    if type(other) is not Layout or self.shape is not other.shape:
      return False
    return all(type(a) is type(b) and (a is b or bool(a == b))
               for a, b in zip(self.values, other.values))

  def __hash__(self) -> int:
    return hash(self.shape)

  def __reduce__(self):
    return Layout, (self.shape, self.values)


def is_module(x: Any) -> bool:
  return isinstance(x, BaseModule)


class EmptyNode:
  """Marks an uninitialized or deleted pytree node (PAX's `EmptyNode`).

  A pytree node without leaves: an attribute holding it is pytree data, so
  assigning an array later keeps the attribute's place in the tree.

  >>> class Att(pax.Module):
  ...     def __init__(self):
  ...         super().__init__()
  ...         self.hidden = pax.EmptyNode()
  >>> att = Att()
  >>> att.pytree_attributes, att.hidden == pax.EmptyNode()
  (('hidden',), True)
  """
  __slots__ = ()

  def __eq__(self, other: Any) -> bool:
    return isinstance(other, EmptyNode)

  def __hash__(self) -> int:
    return hash(EmptyNode)

  def __repr__(self) -> str:
    return "EmptyNode"


jax.tree_util.register_pytree_node(
    EmptyNode, lambda node: ((), None), lambda aux, children: EmptyNode())


def _is_data_leaf(x: Any) -> bool:
  return isinstance(x, (BaseModule, EmptyNode) + ARRAY_TYPES)


def _is_module_or_empty(x: Any) -> bool:
  return isinstance(x, (BaseModule, EmptyNode))


STATIC, DATA, MIXED = 0, 1, 2


def classify(owner: Any, name: str, value: Any) -> int:
  """`DATA` if `value` is pytree data (arrays/modules), `STATIC` if it holds
  none, `MIXED` if it holds both (as PAX, e.g. `[pax.Linear(2, 2), 0]`)."""
  del owner, name
  if isinstance(value, (BaseModule, EmptyNode) + ARRAY_TYPES):
    return DATA
  if value is None or isinstance(value, (str, int, float, bool, complex)):
    return STATIC
  leaves = jax.tree_util.tree_leaves(value, is_leaf=_is_module_or_empty)
  if not leaves:
    return STATIC
  data = [_is_data_leaf(leaf) for leaf in leaves]
  if all(data):
    return DATA
  if not any(data):
    return STATIC
  return MIXED


class ValueNode:
  """A pytree node without children holding a non-array leaf of a mixed
  attribute (its value is part of the treedef, like a static field)."""
  __slots__ = ("value",)

  def __init__(self, value: Any):
    self.value = value

  def __eq__(self, other: Any) -> bool:
    if type(other) is not ValueNode:
      return False
    a, b = self.value, other.value
    if a is b:
      return True
    try:
      return type(a) is type(b) and bool(a == b)
    except Exception:  # pylint: disable=broad-except
      return False

  def __hash__(self) -> int:
    return hash(type(self.value))

  def __repr__(self) -> str:
    return f"ValueNode({self.value!r})"


jax.tree_util.register_pytree_node(
    ValueNode, lambda node: ((), node), lambda node, _: node)


def _is_leaf_or_value(x: Any) -> bool:
  return isinstance(x, (BaseModule, ValueNode))


def _wrap_mixed(value: Any) -> Any:
  return jax.tree_util.tree_map(
      lambda x: x if _is_data_leaf(x) else ValueNode(x), value,
      is_leaf=_is_module_or_empty)


def _unwrap_mixed(value: Any) -> Any:
  return jax.tree_util.tree_map(
      lambda x: x.value if type(x) is ValueNode else x, value,
      is_leaf=_is_leaf_or_value)


def _children(d: Dict[str, Any], shape: "Shape") -> Tuple[Any, ...]:
  if not shape.mixed:
    return tuple(d[n] for n in shape.data)
  mixed = shape.mixed
  return tuple(_wrap_mixed(d[n]) if n in mixed else d[n] for n in shape.data)


# ----------------------------------------------------------------------------
# The flattened form and the instance dict.
# ----------------------------------------------------------------------------


class _Slots:
  """Holds the slots of every module (see `BaseModule`)."""
  __slots__ = ("__dict__", "__weakref__", "_pax_flat", "_pax_memo")


_real_dict = _Slots.__dict__["__dict__"].__get__
_get_flat = _Slots.__dict__["_pax_flat"].__get__
_set_flat = _Slots.__dict__["_pax_flat"].__set__
_get_memo = _Slots.__dict__["_pax_memo"].__get__
_set_memo = _Slots.__dict__["_pax_memo"].__set__
_del_memo = _Slots.__dict__["_pax_memo"].__delete__


def _fill(d: Dict[str, Any], flat: Tuple[Tuple[Any, ...], Layout]) -> None:
  children, layout = flat
  shape = layout.shape
  d.update(shape.order)
  d.update(zip(shape.static, layout.values))
  d.update(zip(shape.data, children))
  if shape.mixed:
    for name in shape.mixed:
      d[name] = _unwrap_mixed(d[name])


def fields(module: "BaseModule") -> Dict[str, Any]:
  """The module's instance dict, filled: every field by name (do not keep)."""
  d = _real_dict(module)
  if not d:
    try:
      _fill(d, _get_flat(module))
    except AttributeError:
      pass  # Not constructed yet.
  return d


def field_values(module: "BaseModule") -> Dict[str, Any]:
  """A copy of all fields of a module (data and static), in order."""
  return dict(fields(module))


def flat(module: "BaseModule") -> Tuple[Tuple[Any, ...], Layout]:
  """`(children, layout)`: the data field values and the layout."""
  return _get_flat(module)


def data_fields(module: "BaseModule") -> Tuple[str, ...]:
  """Names of the data fields (pytree children), in attribute order."""
  return _get_flat(module)[1].data


def _layout_of(module: "BaseModule", d: Dict[str, Any]) -> Layout:
  data, static, values, mixed = [], [], [], []
  for name, value in d.items():
    if name == "_pax_constructing":
      continue
    kind = classify(module, name, value)
    if kind == STATIC:
      static.append(name)
      values.append(value)
    else:
      data.append(name)
      if kind == MIXED:
        mixed.append(name)
  order = tuple(n for n in d if n != "_pax_constructing")
  shape = _shape(type(module), tuple(data), tuple(static), tuple(mixed), order)
  try:
    old = _get_flat(module)[1]
  except AttributeError:
    old = None
  if (old is not None and old.shape is shape and
      all(a is b for a, b in zip(old.values, values))):
    return old  # Keeps jit's cache lookups on the identity fast path.
  return Layout(shape, tuple(values))


def refresh(module: "BaseModule") -> None:
  """Recomputes the flattened form after the instance dict changed."""
  d = fields(module)
  layout = _layout_of(module, d)
  _set_flat(module, (_children(d, layout.shape), layout))
  clear_memo(module)


def set_fields(module: "BaseModule", **values: Any) -> None:
  """Sets fields of a module being built or copied by the library."""
  fields(module).update(values)
  refresh(module)


def get_memo(module: "BaseModule") -> Any:
  try:
    return _get_memo(module)
  except AttributeError:
    return None


def set_memo(module: "BaseModule", value: Any) -> None:
  _set_memo(module, value)


def clear_memo(module: "BaseModule") -> None:
  try:
    _del_memo(module)
  except AttributeError:
    pass


def rebuild(cls: type, values: Dict[str, Any]) -> "BaseModule":
  """A module of class `cls` with these fields (no `__init__`); unpickling."""
  obj = cls.__new__(cls)
  _real_dict(obj).update(values)
  refresh(obj)
  return obj


def _unflatten(layout: Layout, children: Tuple[Any, ...]) -> "BaseModule":
  cls = layout.shape.cls
  obj = cls.__new__(cls)
  flat_form = (children, layout)
  _set_flat(obj, flat_form)
  if layout.shape.eager:
    _fill(_real_dict(obj), flat_form)
  return obj


def _flatten_with_keys(module: "BaseModule"):
  children, layout = _get_flat(module)
  keys = map(jax.tree_util.GetAttrKey, layout.data)
  return tuple(zip(keys, children)), layout


def _flatten_under_construction(module: "BaseModule"):
  d = _real_dict(module)
  layout = _layout_of(module, d)
  return _children(d, layout.shape), layout


# ----------------------------------------------------------------------------
# Construction.
# ----------------------------------------------------------------------------


def _wrap_init(init: Callable[..., None]) -> Callable[..., None]:
  """Runs a user `__init__` with mutation allowed, then fixes the layout."""

  @functools.wraps(init)
  def __init__(self, *args, **kwargs):
    d = _real_dict(self)
    if "_pax_constructing" in d:  # A nested super().__init__ call.
      init(self, *args, **kwargs)
      return
    for key, default in BASE_FIELDS:
      d.setdefault(key, default)
    d["_pax_constructing"] = True
    try:
      with context.also_allow_mutation(self):
        init(self, *args, **kwargs)
    finally:
      del d["_pax_constructing"]
    refresh(self)
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
  d = fields(module)
  children, layout = _get_flat(module)
  swapped = {}
  for name in layout.data:
    value = d[name]
    if any(isinstance(l, BaseModule) for l in jax.tree_util.tree_leaves(
        value, is_leaf=is_module)):
      continue  # Submodules keep their own policies.
    swapped[name] = (value, policy.cast_to_compute(value))
  d.update((n, c) for n, (_, c) in swapped.items())
  _set_flat(module, (_children(d, layout.shape), layout))
  _POLICY_CALLS.active.add(id(module))
  try:
    args, kwargs = policy.cast_to_compute((args, kwargs))
    out = call(module, *args, **kwargs)
  finally:
    _POLICY_CALLS.active.discard(id(module))
    for name, (value, casted) in swapped.items():
      new = d.get(name, casted)
      d[name] = value if new is casted else policy.cast_to_param(new)
    refresh(module)
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
  d = _real_dict(module)
  for key, default in BASE_FIELDS:
    d.setdefault(key, default)
  d[name] = value
  refresh(module)


def _wrap_call(call: Callable[..., Any]) -> Callable[..., Any]:
  """Runs `call` under the module's mixed precision policy, if it has one."""

  @functools.wraps(call)
  def __call__(self, *args, **kwargs):
    policy = fields(self).get(MP_POLICY)
    if policy is None or id(self) in _POLICY_CALLS.active:
      return call(self, *args, **kwargs)
    return _call_with_policy(self, call, policy, args, kwargs)

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
    leaves = jax.tree_util.tree_leaves(value, is_leaf=is_module)
    if any(_is_data_leaf(leaf) for leaf in leaves):
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


class BaseModule(_Slots):
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
        cls.__getattr__ is not BaseModule.__getattr__ or
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
        cls, _flatten_with_keys, _unflatten,
        flatten_func=operator.attrgetter("_pax_flat"))

  def __init__(self, *, training: bool = True, name: Optional[str] = None):
    self._training = training
    self._name = name

  @property
  def __dict__(self) -> Dict[str, Any]:  # pylint: disable=invalid-name
    return fields(self)

  def __getattr__(self, name: str) -> Any:
    # Only reached when normal lookup fails: on a module built by
    # unflattening, the first access fills `__dict__` from the flat form.
    if name == "_pax_flat":  # A pytree flatten while `__init__` runs.
      return _flatten_under_construction(self)
    d = _real_dict(self)
    if not d and not name.startswith("__"):
      try:
        _fill(d, _get_flat(self))
      except AttributeError:
        pass
      else:
        if name in d:
          return d[name]
    raise AttributeError(
        f"'{type(self).__name__}' object has no attribute '{name}'")

  def __setattr__(self, name: str, value: Any) -> None:
    if not context.is_mutable(self):
      try:
        _get_flat(self)
      except AttributeError:
        # An `__init__` added after the class was created (`@dataclass`).
        _adopt_init(self, name, value)
        return
      raise immutable_error(self, f"set attribute `{name}`")
    d = fields(self)
    is_data = classify(self, name, value) == DATA
    d[name] = value
    if "_pax_constructing" in d:
      return  # The layout is fixed at the end of `__init__`.
    children, layout = _get_flat(self)
    if is_data and name in layout.data and not layout.shape.mixed:
      children = tuple(d[n] for n in layout.data)
      _set_flat(self, (children, layout))
      clear_memo(self)
    else:
      refresh(self)

  def __delattr__(self, name: str) -> None:
    if not context.is_mutable(self):
      raise immutable_error(self, f"delete attribute `{name}`")
    d = fields(self)
    if name not in d:
      raise AttributeError(name)
    del d[name]
    if "_pax_constructing" not in d:
      refresh(self)

  def __reduce__(self):
    return rebuild, (type(self), field_values(self))

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
  for leaf in jax.tree_util.tree_leaves(tree, is_leaf=is_module):
    if isinstance(leaf, BaseModule):
      yield leaf
      yield from iter_modules(_get_flat(leaf)[0])


def submodules(module: BaseModule) -> List[BaseModule]:
  """The direct submodules, in attribute order."""
  return [m for m in jax.tree_util.tree_leaves(
      _get_flat(module)[0], is_leaf=is_module) if isinstance(m, BaseModule)]


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
    for leaf in jax.tree_util.tree_leaves(_get_flat(module)[0],
                                          is_leaf=is_module):
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
