"""The fields of a pax module and its flattened form (its pytree node).

A module's attributes are split into *data fields* (arrays, submodules,
containers of them: the node's children) and *static fields* (everything
else). Both live in the instance's `__dict__`, and the module also keeps its
flattened form, `(children, layout)`, in a slot:

- flattening reads that slot with a C `operator.attrgetter`, so JAX's C++
  pytree code runs no Python for a module node;
- the `Layout` (shape: class and field names; static values) is the node's
  aux data, so jit's caches tell apart modules whose static values differ
  and reuse one entry for modules that only differ in array values;
- unflattening creates the object and stores `(children, layout)`; its
  `__dict__` is filled from them on first field access (`LazyField`). A pytree round
  trip (every jitted call) then costs what JAX charges for dataclass nodes.

Nothing is registered or cached per static value: a `Layout` lives as long
as the modules and treedefs holding it, a `Shape` as long as its layouts.
Library code changes a module's fields with `set_fields` / `refresh`, never
by writing `__dict__` behind the flat form's back.
"""

import dataclasses
import weakref
from typing import Any, Dict, Optional, Tuple

import jax
import numpy as np

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
      before the field's `LazyField`) or its own `__getattr__`.
    new: creates an instance without `__init__` (`object.__new__`, or the
      class's own `__new__`).
    make: `(new, cls, eager)`, what `unflatten` reads, in one tuple.
  """
  cls: type
  data: Tuple[str, ...]
  static: Tuple[str, ...]
  mixed: Tuple[str, ...]
  order: Dict[str, None] = dataclasses.field(repr=False)
  eager: bool = dataclasses.field(repr=False)
  new: Any = dataclasses.field(repr=False, default=object.__new__)
  make: Tuple[Any, type, bool] = dataclasses.field(init=False, repr=False)

  def __post_init__(self):
    # `(new, cls, eager)`, copied into each layout for `unflatten`.
    object.__setattr__(self, "make", (self.new, self.cls, self.eager))

  def __reduce__(self):
    # Copies and unpickled treedefs must find the interned shape, since
    # layouts compare shapes by identity.
    return _shape, (self.cls, self.data, self.static, self.mixed,
                    tuple(self.order))


_SHAPES: "weakref.WeakValueDictionary[Any, Shape]" = (
    weakref.WeakValueDictionary())


class LazyField:
  """A class attribute standing for an instance field until `__dict__` is
  filled.

  An unflattened module's `__dict__` starts empty (see the module
  docstring). For each field name of its shape the class holds a `LazyField`
  (a non-data descriptor): the first access of a field fills `__dict__` from
  the flat form, and from then on the instance's own value is found first.
  This keeps `__getattr__` off module classes, whose mere presence makes
  every attribute read, the flatten's included, take a slower path.
  Read on the class, it is absent: `hasattr(cls, name)` stays False.
  """
  __slots__ = ("name",)

  def __init__(self, name: str):
    self.name = name

  def __get__(self, obj: Any, owner: Any = None) -> Any:
    if obj is None:
      raise AttributeError(
          f"type object '{owner.__name__}' has no attribute '{self.name}'")
    try:
      return fields(obj)[self.name]
    except KeyError:
      raise AttributeError(
          f"'{type(obj).__name__}' object has no attribute "
          f"'{self.name}'") from None


def _class_attribute(cls: type, name: str) -> Any:
  """What `name` is on `cls` (None if nothing), without calling descriptors."""
  for klass in cls.__mro__:
    if name in klass.__dict__:
      return klass.__dict__[name]
  return None


def _lazy_or_eager(cls: type, order: Tuple[str, ...]) -> bool:
  """Gives `cls` a `LazyField` per field name; True if a field must be
  filled eagerly (a class attribute of that name would answer first)."""
  eager = cls._pax_custom_getattr
  for name in order:
    found = _class_attribute(cls, name)
    if found is None:
      setattr(cls, name, LazyField(name))
    elif not isinstance(found, LazyField):
      eager = True
  return eager


def _shape(cls: type, data: Tuple[str, ...], static: Tuple[str, ...],
           mixed: Tuple[str, ...], order: Tuple[str, ...],
           parent: Optional[Shape] = None) -> Shape:
  # Not keyed by `order`: modules whose data and static names agree share a
  # treedef however their attributes interleave (a lazily built module and
  # an eagerly built one, say); `__dict__` then takes the first one's order.
  key = (cls, data, static, mixed)
  shape = _SHAPES.get(key)
  if shape is None:
    # A shape one field longer than `parent` (a module being built) only
    # needs its new name checked.
    eager = (parent.eager | _lazy_or_eager(cls, order[-1:])
             if parent is not None else _lazy_or_eager(cls, order))
    # `object.__new__(cls)` directly unless the class has its own `__new__`.
    new = (object.__new__ if cls.__new__ is object.__new__ else
           cls.__new__)
    shape = Shape(cls, data, static, mixed, dict.fromkeys(order), eager, new)
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
  __slots__ = ("shape", "values", "make")
  shape: Shape
  values: Tuple[Any, ...]

  def __post_init__(self):
    # `(new, cls, eager)` of the shape, one slot away from `unflatten`.
    object.__setattr__(self, "make", self.shape.make)

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
  return isinstance(x, ModuleSlots)


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


def is_data_leaf(x: Any) -> bool:
  return isinstance(x, (ModuleSlots, EmptyNode) + ARRAY_TYPES)


def _is_module_or_empty(x: Any) -> bool:
  return isinstance(x, (ModuleSlots, EmptyNode))


STATIC, DATA, MIXED = 0, 1, 2


def classify(owner: Any, name: str, value: Any) -> int:
  """`DATA` if `value` is pytree data (arrays/modules), `STATIC` if it holds
  none, `MIXED` if it holds both (as PAX, e.g. `[pax.Linear(2, 2), 0]`)."""
  del owner, name
  if isinstance(value, (ModuleSlots, EmptyNode) + ARRAY_TYPES):
    return DATA
  if value is None or isinstance(value, (str, int, float, bool, complex)):
    return STATIC
  leaves = jax.tree_util.tree_leaves(value, is_leaf=_is_module_or_empty)
  if not leaves:
    return STATIC
  data = [is_data_leaf(leaf) for leaf in leaves]
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
  return isinstance(x, (ModuleSlots, ValueNode))


def _wrap_mixed(value: Any) -> Any:
  return jax.tree_util.tree_map(
      lambda x: x if is_data_leaf(x) else ValueNode(x), value,
      is_leaf=_is_module_or_empty)


def _unwrap_mixed(value: Any) -> Any:
  return jax.tree_util.tree_map(
      lambda x: x.value if type(x) is ValueNode else x, value,
      is_leaf=_is_leaf_or_value)


def children_of(d: Dict[str, Any], shape: "Shape") -> Tuple[Any, ...]:
  if not shape.mixed:
    return tuple(d[n] for n in shape.data)
  mixed = shape.mixed
  return tuple(_wrap_mixed(d[n]) if n in mixed else d[n] for n in shape.data)


# ----------------------------------------------------------------------------
# The flattened form and the instance dict.
# ----------------------------------------------------------------------------


class ModuleSlots:
  """The slots of every module; `module_base.BaseModule` subclasses it."""
  __slots__ = ("__dict__", "__weakref__", "_pax_flat", "_pax_memo")


real_dict = ModuleSlots.__dict__["__dict__"].__get__
get_flat = ModuleSlots.__dict__["_pax_flat"].__get__
set_flat = ModuleSlots.__dict__["_pax_flat"].__set__
_get_memo = ModuleSlots.__dict__["_pax_memo"].__get__
_set_memo = ModuleSlots.__dict__["_pax_memo"].__set__
_del_memo = ModuleSlots.__dict__["_pax_memo"].__delete__


def fill(d: Dict[str, Any], flat: Tuple[Tuple[Any, ...], Layout]) -> None:
  children, layout = flat
  shape = layout.shape
  d.update(shape.order)
  d.update(zip(shape.static, layout.values))
  d.update(zip(shape.data, children))
  if shape.mixed:
    for name in shape.mixed:
      d[name] = _unwrap_mixed(d[name])


def fields(module: "ModuleSlots") -> Dict[str, Any]:
  """The module's instance dict, filled: every field by name (do not keep)."""
  d = real_dict(module)
  if not d:
    try:
      fill(d, get_flat(module))
    except AttributeError:
      pass  # Not constructed yet.
  return d


def field_values(module: "ModuleSlots") -> Dict[str, Any]:
  """A copy of all fields of a module (data and static), in order."""
  return dict(fields(module))


def flat(module: "ModuleSlots") -> Tuple[Tuple[Any, ...], Layout]:
  """`(children, layout)`: the data field values and the layout."""
  return get_flat(module)


def data_fields(module: "ModuleSlots") -> Tuple[str, ...]:
  """Names of the data fields (pytree children), in attribute order."""
  return get_flat(module)[1].data


def _layout_of(module: "ModuleSlots", d: Dict[str, Any]) -> Layout:
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
    old = get_flat(module)[1]
  except AttributeError:
    old = None
  if (old is not None and old.shape is shape and
      all(a is b for a, b in zip(old.values, values))):
    return old  # Keeps jit's cache lookups on the identity fast path.
  return Layout(shape, tuple(values))


def refresh(module: "ModuleSlots") -> None:
  """Recomputes the flattened form after the instance dict changed."""
  d = fields(module)
  layout = _layout_of(module, d)
  set_flat(module, (children_of(d, layout.shape), layout))
  clear_memo(module)


def _replaced(items: Tuple[Any, ...], i: int, value: Any) -> Tuple[Any, ...]:
  return items[:i] + (value,) + items[i + 1:]


def set_field(module: "ModuleSlots", name: str, value: Any) -> None:
  """Sets one field and updates the flat form to match.

  Only the new value is classified: a module being built sets its fields
  one by one and its flat form is kept current all along, so re-reading
  every field at each step would make construction quadratic.
  """
  d = fields(module)
  kind = classify(module, name, value)
  is_new = name not in d
  d[name] = value
  try:
    children, layout = get_flat(module)
  except AttributeError:
    refresh(module)
    return
  shape = layout.shape
  if kind == MIXED or shape.mixed:
    refresh(module)
    return
  clear_memo(module)
  if is_new:
    order = tuple(shape.order) + (name,)
    if kind == DATA:
      new_shape = _shape(shape.cls, shape.data + (name,), shape.static, (),
                         order, shape)
      set_flat(module, (children + (value,), Layout(new_shape, layout.values)))
    else:
      new_shape = _shape(shape.cls, shape.data, shape.static + (name,), (),
                         order, shape)
      set_flat(module, (children, Layout(new_shape, layout.values + (value,))))
  elif kind == DATA and name in shape.data:
    i = shape.data.index(name)
    set_flat(module, (_replaced(children, i, value), layout))
  elif kind == STATIC and name in shape.static:
    i = shape.static.index(name)
    if layout.values[i] is not value:
      set_flat(module, (children, Layout(
          shape, _replaced(layout.values, i, value))))
  else:  # The field changed between data and static.
    refresh(module)


def set_fields(module: "ModuleSlots", **values: Any) -> None:
  """Sets fields of a module being built or copied by the library."""
  fields(module).update(values)
  refresh(module)


def get_memo(module: "ModuleSlots") -> Any:
  try:
    return _get_memo(module)
  except AttributeError:
    return None


def set_memo(module: "ModuleSlots", value: Any) -> None:
  _set_memo(module, value)


def clear_memo(module: "ModuleSlots") -> None:
  try:
    _del_memo(module)
  except AttributeError:
    pass


def rebuild(cls: type, values: Dict[str, Any]) -> "ModuleSlots":
  """A module of class `cls` with these fields (no `__init__`); unpickling."""
  obj = cls.__new__(cls)
  real_dict(obj).update(values)
  refresh(obj)
  return obj


def unflatten(layout: Layout, children: Tuple[Any, ...],
              _set_flat: Any = set_flat) -> "ModuleSlots":
  # The hot path of every jitted call's outputs: keep it to a few C calls.
  new, cls, eager = layout.make
  obj = new(cls)
  flat_form = (children, layout)
  _set_flat(obj, flat_form)
  if eager:
    fill(real_dict(obj), flat_form)
  return obj


def flatten_with_keys(module: "ModuleSlots"):
  children, layout = get_flat(module)
  keys = map(jax.tree_util.GetAttrKey, layout.data)
  return tuple(zip(keys, children)), layout
