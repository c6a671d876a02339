"""`pax.Module`: PAX-style stateful modules that are cheap JAX pytrees.

How a module is a pytree, and why it is fast
--------------------------------------------
A module's attributes are split into *data fields* (values holding JAX/NumPy
arrays or submodules; they are pytree children) and *meta fields* (everything
else; they live in the treedef). JAX's C++ pytree code can flatten a
`register_dataclass` node without calling back into Python, but a dataclass
node has one fixed set of fields per class while PAX modules grow attributes
freely. So each module instance is given a *layout class*: a cached subclass of
its own class, keyed by its field names and registered with
`jax.tree_util.register_dataclass`. Layout classes take `types.SimpleNamespace`'s
C `__init__`, so unflattening a module runs no Python either. `isinstance`
works as usual; `type(module)` is the layout class (use `module.__class__` with
`isinstance`, or `pax.module_class(module)` for the user's class).
"""

import functools
import types
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, TypeVar

import jax
import numpy as np

from pax_haiku._src import context

T = TypeVar("T", bound="Module")

_ARRAY_TYPES = (jax.Array, np.ndarray)
_BASE_FIELDS = {"_training": True, "_name": None, "_frozen": False}


def is_module(x: Any) -> bool:
  return isinstance(x, Module)


def _is_data_leaf(x: Any) -> bool:
  return isinstance(x, (Module,) + _ARRAY_TYPES)


def _describe(value: Any) -> str:
  return type(value).__name__


def _classify(owner: Any, name: str, value: Any) -> bool:
  """True if `value` is pytree data (arrays/modules), False if static."""
  if isinstance(value, (Module,) + _ARRAY_TYPES):
    return True
  if value is None or isinstance(value, (str, int, float, bool, complex)):
    return False
  leaves = jax.tree_util.tree_leaves(value, is_leaf=is_module)
  if not leaves:
    return False
  data = [_is_data_leaf(leaf) for leaf in leaves]
  if all(data):
    return True
  if not any(data):
    return False
  others = sorted({_describe(l) for l, d in zip(leaves, data) if not d})
  raise TypeError(
      f"Attribute `{type(owner).__name__}.{name}` mixes JAX arrays/modules with "
      f"other values ({', '.join(others)}), so pax cannot tell which parts are "
      "trainable pytree data and which are static configuration.\n"
      "Fix: keep static values in a separate attribute, and wrap plain "
      "functions with `pax.Lambda(fn)`, e.g. "
      "`self.layers = [pax.Linear(2, 2), pax.Lambda(jax.nn.relu)]`.")


# ----------------------------------------------------------------------------
# Layout classes.
# ----------------------------------------------------------------------------

_LAYOUTS: Dict[Any, type] = {}

# Instance `__dict__` key of `(treedef, TreeInfo)` cached on a frozen module
# (see `_structure`); not a field, so never flattened, copied or pickled.
_MEMO = "_pax_memo"


def _static_key(value: Any) -> Any:
  """A hashable key for a static value, or None if it cannot live in a class."""
  try:
    return (type(value), hash(value), value)
  except TypeError:
    return None


def _class_value(value: Any) -> Any:
  # Functions (and other descriptors) stored on a class would bind as methods.
  if hasattr(type(value), "__get__"):
    return staticmethod(value)
  return value


def _rebuild(base: type, fields: Dict[str, Any]) -> "Module":
  obj = types.SimpleNamespace.__new__(base)
  obj.__dict__.update(fields)
  _finalize(obj)
  return obj


def _layout_class(base: type, data: Tuple[str, ...], meta: Tuple[str, ...],
                  static: Tuple[Tuple[str, Any], ...]) -> type:
  key = (base, data, meta, tuple((n, _static_key(v)) for n, v in static))
  cls = _LAYOUTS.get(key)
  if cls is None:
    namespace = {name: _class_value(value) for name, value in static}
    namespace.update({
        "__init__": types.SimpleNamespace.__init__,
        "__module__": base.__module__,
        "__qualname__": base.__qualname__,
        "__reduce__": lambda self: (_rebuild, (base, field_values(self))),
        "_pax_is_layout": True,
        "_pax_data_fields": data,
        "_pax_meta_fields": meta,
        "_pax_static_fields": tuple(n for n, _ in static),
    })
    cls = type(base.__name__, (base,), namespace)
    # JAX 0.10.2 compares dataclass treedefs by arity and meta values, not by
    # type, and jit's caches trust that equality: without this meta field
    # some jitted calls come back with another layout's static values (see
    # `test_jit_keeps_layouts_apart`). It costs flatten time, most on nodes
    # without data (tools/bench/dataclass_floor.py measures both).
    cls._pax_layout = cls
    jax.tree_util.register_dataclass(cls, data_fields=list(data),
                                     meta_fields=["_pax_layout", *meta])
    _LAYOUTS[key] = cls
  return cls


def field_values(module: "Module") -> Dict[str, Any]:
  """All attributes of a module (data, static and meta), in order."""
  cls = type(module)
  out = {n: getattr(cls, n) for n in cls._pax_static_fields}
  out.update(module.__dict__)
  out.pop("_pax_layout", None)
  out.pop(_MEMO, None)
  return out


def _finalize(module: "Module", drop: Optional[str] = None) -> None:
  """Gives `module` the layout class matching its current attributes.

  Data fields stay in the instance `__dict__` (pytree children). Hashable
  static values move onto the layout class, so they cost nothing to flatten
  or unflatten; unhashable ones stay as dataclass meta fields.
  """
  values = field_values(module)
  values.pop(drop, None)
  data, meta, static = [], [], []
  for name, value in values.items():
    if _classify(module, name, value):
      data.append(name)
    elif _static_key(value) is None:
      meta.append(name)
    else:
      static.append((name, value))
  d = module.__dict__
  for name, _ in static:
    d.pop(name, None)
  d.pop(drop, None)
  d.pop("_pax_layout", None)
  d.pop(_MEMO, None)
  base = type(module)._pax_base
  object.__setattr__(module, "__class__",
                     _layout_class(base, tuple(data), tuple(meta),
                                   tuple(static)))


def _wrap_init(init: Callable[..., None]) -> Callable[..., None]:
  """Runs a user `__init__` with mutation allowed, then fixes the layout."""

  @functools.wraps(init)
  def __init__(self, *args, **kwargs):
    d = self.__dict__
    if "_pax_constructing" in d:  # A nested super().__init__ call.
      init(self, *args, **kwargs)
      return
    for key, default in _BASE_FIELDS.items():
      d.setdefault(key, default)
    d["_pax_constructing"] = True
    try:
      with context.also_allow_mutation(self):
        init(self, *args, **kwargs)
    finally:
      del d["_pax_constructing"]
    _finalize(self)
    check_no_shared_modules(self)

  __init__._pax_wrapped = True
  return __init__


def _check_class_attributes(cls: type) -> None:
  for name, value in vars(cls).items():
    if name.startswith("__") or isinstance(
        value, (types.FunctionType, classmethod, staticmethod, property)):
      continue
    leaves = jax.tree_util.tree_leaves(value, is_leaf=is_module)
    if any(_is_data_leaf(leaf) for leaf in leaves):
      raise TypeError(
          f"Class attribute `{cls.__name__}.{name}` holds a JAX array or a "
          "module. Class attributes are shared by every instance and are not "
          "part of the module's pytree, so they would be neither trained nor "
          "traced.\nFix: assign it in `__init__`, e.g. "
          f"`self.{name} = ...`.")


def parameters_method(*trainable_attributes: str,
                      submodules: bool = True) -> Callable[[T], T]:
  """Returns a `parameters` method that keeps only the named trainable leaves.

  >>> class Linear(pax.Module):
  ...     parameters = pax.parameters_method("weight")
  ...     def __init__(self):
  ...         self.weight = jnp.array(1.0)
  >>> fc = Linear()
  >>> fc == fc.parameters()
  True

  Args:
    *trainable_attributes: names of trainable attributes (a name may also be a
      space separated list of names).
    submodules: include the submodules' trainable parameters if true.

  Returns:
    A method that returns a copy of the module with only trainable leaves
    (other leaves become `None`).
  """
  names = []
  for item in trainable_attributes:
    if not isinstance(item, str):
      raise TypeError(
          "parameters_method expects attribute names (str), got "
          f"{item!r}. Fix: pax.parameters_method('weight', 'bias').")
    names.extend(item.split())

  def parameters(self: T) -> T:
    return select_parameters(self)

  parameters._pax_trainable = tuple(names)
  parameters._pax_submodules = bool(submodules)
  return parameters


class Module(types.SimpleNamespace):
  """Base class of pax modules: stateful objects that are JAX pytrees.

  Attributes holding arrays or submodules are pytree data; other attributes
  are static. Outside `pax.pure` a module is immutable.

  >>> class Counter(pax.Module):
  ...     def __init__(self):
  ...         super().__init__()
  ...         self.count = jnp.array(0)
  ...     def __call__(self, x):
  ...         self.count = self.count + 1
  ...         return x
  >>> counter, _ = pax.purecall(Counter(), 1.0)
  >>> int(counter.count)
  1
  """

  _pax_base: type
  _pax_trainable: Tuple[str, ...] = ()
  _pax_param_submodules: bool = True
  _pax_data_fields: Tuple[str, ...] = ()
  _pax_meta_fields: Tuple[str, ...] = ()
  _pax_static_fields: Tuple[str, ...] = ()
  _training: bool = True
  _name: Optional[str] = None
  _frozen: bool = False

  def __init_subclass__(cls, **kwargs):
    super().__init_subclass__(**kwargs)
    if cls.__dict__.get("_pax_is_layout"):
      return
    cls._pax_base = cls
    init = cls.__dict__.get("__init__")
    if init is not None and not getattr(init, "_pax_wrapped", False):
      cls.__init__ = _wrap_init(init)
    params = cls.__dict__.get("parameters")
    if params is not None:
      if not hasattr(params, "_pax_trainable"):
        raise TypeError(
            f"`{cls.__name__}.parameters` must be created with "
            "`pax.parameters_method(...)` so pax knows which attributes are "
            "trainable.\nFix: `parameters = pax.parameters_method('weight', "
            "'bias')` in the class body.")
      cls._pax_trainable = params._pax_trainable
      cls._pax_param_submodules = params._pax_submodules
    _check_class_attributes(cls)

  def __init__(self, *, training: bool = True, name: Optional[str] = None):
    self._training = training
    self._name = name

  # -- immutability ----------------------------------------------------------

  def __setattr__(self, name: str, value: Any) -> None:
    if not context.is_mutable(self):
      raise _immutable_error(self, f"set attribute `{name}`")
    d = self.__dict__
    cls = type(self)
    is_data = _classify(self, name, value)
    d[name] = value
    d.pop(_MEMO, None)
    if "_pax_is_layout" not in cls.__dict__:
      return  # Under construction: the layout is fixed at the end.
    if is_data and name in cls._pax_data_fields:
      return
    _finalize(self)

  def __delattr__(self, name: str) -> None:
    if not context.is_mutable(self):
      raise _immutable_error(self, f"delete attribute `{name}`")
    cls = type(self)
    if name not in self.__dict__ and name not in cls._pax_static_fields:
      raise AttributeError(name)
    self.__dict__.pop(name, None)
    self.__dict__.pop(_MEMO, None)
    if "_pax_is_layout" in cls.__dict__:
      _finalize(self, drop=name)

  # -- identity --------------------------------------------------------------

  def __eq__(self, other: Any) -> bool:
    if self is other:
      return True
    if not isinstance(other, Module) or type(self) is not type(other):
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

  def __repr__(self) -> str:
    info = self._repr_info()
    name = f"({self._name}) " if self._name else ""
    cls = self._pax_base.__name__
    if not info:
      return f"{name}{cls}"
    items = ", ".join(f"{k}={v}" for k, v in info.items() if v is not None)
    return f"{name}{cls}({items})"

  def _repr_info(self) -> Dict[str, Any]:
    return {}

  # -- properties ------------------------------------------------------------

  @property
  def name(self) -> Optional[str]:
    return self._name

  @property
  def training(self) -> bool:
    """True in training mode (the default), False after `eval()`."""
    return self._training

  @property
  def params(self) -> Dict[str, Dict[str, Any]]:
    """Haiku-style `{module_path: {name: array}}` of the whole subtree."""
    return _naming.haiku_dicts(self)[0]

  @property
  def state(self) -> Dict[str, Dict[str, Any]]:
    """Haiku-style `{module_path: {name: array}}` non-trainable state."""
    return _naming.haiku_dicts(self)[1]

  # -- parameters ------------------------------------------------------------

  def parameters(self: T) -> T:
    """A copy holding only trainable leaves (other leaves become `None`)."""
    return select_parameters(self)

  def update_parameters(self: T, params: Any) -> T:
    """Returns a copy with trainable leaves taken from `params`.

    Args:
      params: the output of `parameters()` (or a module of the same
        structure), or a Haiku params mapping `{module_path: {name: array}}`.
    """
    return update_parameters(self, params=params)

  def update_state(self: T, state: Any) -> T:
    """Returns a copy with state leaves taken from a Haiku state mapping."""
    return _naming.update_from_haiku(self, state, role="state")

  # -- functional updates -----------------------------------------------------

  def copy(self: T) -> T:
    """A shallow copy: new module objects, the same array leaves."""
    leaves, treedef = jax.tree_util.tree_flatten(self)
    return treedef.unflatten(leaves)

  def replace(self: T, **kwargs: Any) -> T:
    """Returns a copy with some attributes replaced.

    >>> net = pax.Linear(2, 2)
    >>> net = net.replace(bias=jnp.zeros((2,)))
    >>> net.bias.shape
    (2,)
    """
    module = self.copy()
    with context.allow_mutation([module]):
      for name, value in kwargs.items():
        if name not in field_values(module):
          raise ValueError(
              f"`{module._pax_base.__name__}` has no attribute `{name}`; "
              f"replace only changes existing attributes "
              f"({', '.join(_public_fields(module))}).\nFix: add new "
              "attributes inside a `pax.pure` function instead.")
        setattr(module, name, value)
    check_no_shared_modules(module)
    return module

  def replace_node(self: T, node: Any, value: Any) -> T:
    """Returns a copy where the leaf/submodule `node` is replaced by `value`.

    >>> net = pax.Sequential(pax.Linear(2, 2), jax.nn.relu)
    >>> net = net.replace_node(net[0].weight, jnp.zeros((2, 3)))
    >>> net[0].weight.shape
    (2, 3)
    """
    leaves, treedef = jax.tree_util.tree_flatten(
        self, is_leaf=lambda x: x is node)
    count = sum(1 for x in leaves if x is node)
    if count != 1:
      raise ValueError(
          f"replace_node: the node must appear exactly once in the module, "
          f"found it {count} times.\nFix: pass an array or submodule taken "
          "from this module, e.g. `net.replace_node(net[0].weight, w)`.")
    return treedef.unflatten([value if x is node else x for x in leaves])

  def submodules(self) -> List["Module"]:
    """The direct submodules, in attribute order."""
    out = []
    for name in type(self)._pax_data_fields:
      out.extend(m for m in jax.tree_util.tree_leaves(
          getattr(self, name), is_leaf=is_module) if isinstance(m, Module))
    return out

  def apply(self: T, fn: Callable[["Module"], "Module"]) -> T:
    """Applies `fn` to every submodule (bottom-up), then to the module itself.

    >>> net = pax.Sequential(pax.Linear(1, 1), jax.nn.relu)
    >>> net = net.apply(lambda m: m.replace(_training=False))
    >>> net[0].training
    False
    """
    def rec(x):
      return x.apply(fn) if isinstance(x, Module) else x

    module = self.copy()
    new_fields = {}
    for name in type(module)._pax_data_fields:
      new_fields[name] = jax.tree_util.tree_map(
          rec, getattr(module, name), is_leaf=is_module)
    module.__dict__.update(new_fields)
    return fn(module)

  def train(self: T) -> T:
    """A copy of the whole tree in training mode."""
    return enable_train_mode(self)

  def eval(self: T) -> T:
    """A copy of the whole tree in evaluation mode."""
    return enable_eval_mode(self)

  def summary(self) -> str:
    """The tree of submodules with parameter counts and shapes.

    >>> net = pax.Sequential(pax.Linear(2, 3), jax.nn.relu, pax.Linear(3, 4))
    >>> print(net.summary())
    Sequential  # 25 params
    ├── Linear(in_dim=2, out_dim=3, with_bias=True)  # 9 params: bias (3,), weight (2, 3)
    ├── Lambda(relu)
    └── Linear(in_dim=3, out_dim=4, with_bias=True)  # 16 params: bias (4,), weight (3, 4)
    Total: 25 parameters, 0 state values
    """
    lines = _summary_lines(self)
    n_params = _count(self.parameters())
    n_all = _count(self)
    lines.append(f"Total: {n_params} parameters, {n_all - n_params} "
                 "state values")
    return "\n".join(lines)


def _public_fields(module: Module) -> List[str]:
  return [k for k in field_values(module) if not k.startswith("_")]


def _count(tree: Any) -> int:
  return sum(int(np.size(x)) for x in jax.tree_util.tree_leaves(tree))


def _own_leaves(module: Module) -> List[Tuple[str, Any]]:
  out = []
  for name in type(module)._pax_data_fields:
    for path, leaf in jax.tree_util.tree_flatten_with_path(
        getattr(module, name), is_leaf=is_module)[0]:
      if not isinstance(leaf, Module):
        out.append((name + jax.tree_util.keystr(path), leaf))
  return out


def _summary_lines(module: Module) -> List[str]:
  head = repr(module)
  n_params = _count(module.parameters())
  n_state = _count(module) - n_params
  counts = []
  if n_params or n_state:
    counts.append(f"{n_params} params")
  if n_state:
    counts.append(f"{n_state} state")
  own = _own_leaves(module)
  if counts:
    head += "  # " + ", ".join(counts)
    if own and not module.submodules():
      desc = [f"{n} {tuple(np.shape(v))}" for n, v in own[:4]]
      head += ": " + ", ".join(desc) + (", ..." if len(own) > 4 else "")
  lines = [head]
  subs = module.submodules()
  for i, sub in enumerate(subs):
    sub_lines = _summary_lines(sub)
    last = i == len(subs) - 1
    lines.append(("└── " if last else "├── ") + sub_lines[0])
    lines.extend(("    " if last else "│   ") + l for l in sub_lines[1:])
  return lines


def _immutable_error(module: Any, action: str) -> ValueError:
  return ValueError(
      f"Cannot {action} of `{type(module).__name__}`: pax modules are "
      "immutable outside `pax.pure` (and inside a JAX transform nested deeper "
      "than the `pax.pure` call that owns the module).\nFix: do the update "
      "inside a function decorated with `pax.pure`, e.g.\n"
      "    @pax.pure\n    def step(model, x):\n        y = model(x)\n"
      "        return model, y\n"
      "or use `model, y = pax.purecall(model, x)`.")


def module_class(module: Module) -> type:
  """The user-facing class of `module` (not its internal layout class)."""
  return type(module)._pax_base


def iter_modules(tree: Any) -> Iterator[Module]:
  """Yields every module reachable in `tree` (depth-first, parents first)."""
  for leaf in jax.tree_util.tree_leaves(tree, is_leaf=is_module):
    if isinstance(leaf, Module):
      yield leaf
      for name in type(leaf)._pax_data_fields:
        yield from iter_modules(getattr(leaf, name))


def check_no_shared_modules(tree: Any) -> List[Module]:
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


# ----------------------------------------------------------------------------
# Functional API.
# ----------------------------------------------------------------------------


def _require_module(fn_name: str, module: Any) -> None:
  if not isinstance(module, Module):
    raise TypeError(
        f"{fn_name} expects a pax.Module, got {type(module).__name__}.\n"
        f"Fix: pass a module, e.g. `{fn_name}(pax.Linear(2, 2))`; wrap Haiku "
        "code with `pax.from_haiku(f)(sample_input)`.")


def _structure(module: Module) -> Tuple[Any, Any, Optional[List[Any]]]:
  """`(treedef, TreeInfo, leaves)` of `module`; leaves is None if cached.

  Outside `pax.pure` modules never change (pure mutates fresh copies), so
  the treedef and naming info are cached on the instance: `parameters()` of
  a frozen, all-trainable model then costs a dict lookup instead of a
  flatten and a treedef hash.
  """
  memo = module.__dict__.get(_MEMO)
  if memo is not None:
    return memo[0], memo[1], None
  leaves, treedef = jax.tree_util.tree_flatten(module)
  info = _naming.tree_info(treedef, leaves)
  if context.nothing_mutable():
    module.__dict__[_MEMO] = (treedef, info)
  return treedef, info, leaves


def select_parameters(module: T) -> T:
  """A copy of `module` whose non-trainable leaves are `None`."""
  _require_module("pax.select_parameters", module)
  treedef, info, leaves = _structure(module)
  if info.all_trainable:  # Modules are immutable: no copy needed.
    return module
  if leaves is None:
    leaves = jax.tree_util.tree_leaves(module)
  return treedef.unflatten(
      [x if t else None for x, t in zip(leaves, info.trainable)])


def update_parameters(module: T, *, params: Any) -> T:
  """Returns `module` with trainable leaves replaced by those of `params`.

  Args:
    module: a pax module.
    params: the output of `module.parameters()` (e.g. after an optimizer step),
      a module of the same structure, or a Haiku params mapping.

  Returns:
    A new module.
  """
  _require_module("pax.update_parameters", module)
  if not isinstance(params, Module):
    if hasattr(params, "keys"):
      return _naming.update_from_haiku(module, params, role="params")
    raise TypeError(
        "update_parameters expects `params` to be the output of "
        "`module.parameters()` or a Haiku params mapping, got "
        f"{type(params).__name__}.")
  treedef, info, leaves = _structure(module)
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
        f"`module.parameters()`: {_naming.first_difference(module.parameters(), params)}"
        "\nFix: pass `module.parameters()` (or gradients/updates of it) "
        "computed from this same module.")
  return treedef.unflatten(new)


def _set_field_everywhere(module: T, field: str, value: Any) -> T:
  def fn(m):
    m.__dict__[field] = value
    _finalize(m)
    return m
  return module.apply(fn)


def enable_train_mode(module: T) -> T:
  """A copy of `module` (whole tree) in training mode."""
  _require_module("pax.enable_train_mode", module)
  return _set_field_everywhere(module, "_training", True)


def enable_eval_mode(module: T) -> T:
  """A copy of `module` (whole tree) in evaluation mode."""
  _require_module("pax.enable_eval_mode", module)
  return _set_field_everywhere(module, "_training", False)


def freeze_parameters(module: T) -> T:
  """A copy whose `parameters()` holds no leaves (nothing is trained).

  >>> net = pax.freeze_parameters(pax.Linear(2, 2))
  >>> jax.tree_util.tree_leaves(net.parameters())
  []
  """
  _require_module("pax.freeze_parameters", module)
  return _set_field_everywhere(module, "_frozen", True)


def unfreeze_parameters(module: T) -> T:
  """Undoes `freeze_parameters`."""
  _require_module("pax.unfreeze_parameters", module)
  return _set_field_everywhere(module, "_frozen", False)


def assert_structure_equal(a: Any, b: Any) -> None:
  """Raises ValueError naming the first difference if `a`, `b` differ in tree
  structure (module classes, fields, static values, leaf positions)."""
  if jax.tree_util.tree_structure(a) != jax.tree_util.tree_structure(b):
    raise ValueError("Structures differ: " + _naming.first_difference(a, b))


from pax_haiku._src import haiku_naming as _naming  # pylint: disable=g-import-not-at-top,wrong-import-position

_naming.register_module_type(Module, field_values)
# Subclasses without their own `__init__` inherit this wrapped one.
Module.__init__ = _wrap_init(Module.__init__)
