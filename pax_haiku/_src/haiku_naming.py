"""Where each leaf of a module tree lives in Haiku's `{module_path: {name: x}}`.

Naming follows Haiku's own rules, as if every pax module were an `hk.Module`
created inside its parent: a module's scope is its `name` or its class name in
snake case (`Linear` -> `linear`), a child's scope is `parent/~/child`, and
repeated names in one scope get Haiku's `_1`, `_2` suffixes in attribute order.
A module built from Haiku code (`pax.from_haiku`, the Haiku-backed layers)
keeps the names its Haiku code creates; nested in a parent it is re-rooted
under the parent's scope. The result for one tree structure is computed once
and cached by treedef, so the hot paths (`parameters()`,
`update_parameters()`, `to_haiku`) only flatten and zip.
"""

import collections
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Tuple

import jax
import numpy as np

from pax_haiku._src import haiku_compat
from pax_haiku._src import module_layout

PARAMS = "params"
STATE = "state"


class LeafSpec(NamedTuple):
  bundle: str  # Haiku module path, e.g. "sequential/~/linear".
  name: str  # Name inside the bundle, e.g. "w".
  role: str  # PARAMS or STATE.
  trainable: bool  # Returned by `parameters()`.


class TreeInfo(NamedTuple):
  specs: Tuple[LeafSpec, ...]
  trainable: Tuple[bool, ...]
  params_treedef: Any  # treedef of `module.parameters()`.
  all_trainable: bool  # Then `parameters()` is the module itself.


_CACHE: "collections.OrderedDict[Any, TreeInfo]" = collections.OrderedDict()

_is_module = module_layout.is_module

_CACHE_SIZE = 512


def scope_name(module: Any) -> str:
  """The scope name a module claims inside its parent (before dedup)."""
  custom = module._pax_scope_name()
  if custom is not None:
    return custom
  if module._name:
    return module._name
  return haiku_compat.camel_to_snake(type(module).__name__)


class _Scope:
  """Haiku-style unique names inside one module scope."""

  def __init__(self):
    self.used = set()
    self.counters = collections.Counter()

  def claim(self, base: str) -> str:
    name = base
    while name in self.used:
      self.counters[base] += 1
      name = f"{base}_{self.counters[base]}"
    self.used.add(name)
    return name


def _key_suffix(path: Tuple[Any, ...]) -> str:
  parts = []
  for k in path:
    for attr in ("idx", "key", "name"):
      if hasattr(k, attr):
        parts.append(str(getattr(k, attr)))
        break
    else:
      parts.append(str(k))
  return "".join("_" + p for p in parts)


def _walk(module: Any, path: str, specs: List[Optional[LeafSpec]],
          trainable_ok: bool, is_root: bool) -> None:
  cls = type(module)
  frozen = module._frozen
  own_trainable = trainable_ok and not frozen
  sub_trainable = own_trainable and cls._pax_param_submodules
  scope = _Scope()
  children, layout = module_layout.flat(module)
  for field, value in zip(layout.data, children):
    flat, _ = jax.tree_util.tree_flatten_with_path(value, is_leaf=_is_module)
    for keypath, leaf in flat:
      if _is_module(leaf):
        child = scope.claim(scope_name(leaf))
        _walk(leaf, f"{path}/~/{child}", specs, sub_trainable, False)
        continue
      key = module._pax_leaf_key(field, path, is_root)
      if key is not None:
        bundle, name, role = key
      else:
        bundle, name = path, field + _key_suffix(keypath)
        role = PARAMS if field in cls._pax_trainable else STATE
      specs[leaf] = LeafSpec(bundle, name, role,
                             role == PARAMS and own_trainable and
                             (key is not None or
                              field in cls._pax_trainable))


def tree_info(treedef: Any, leaves: List[Any]) -> TreeInfo:
  """Naming and trainability of every leaf, cached by treedef."""
  info = _CACHE.get(treedef)
  if info is not None:
    return info
  n = len(leaves)
  index_module = treedef.unflatten(list(range(n)))
  specs: List[Optional[LeafSpec]] = [None] * n
  for root in _roots(index_module):
    _walk(root, scope_name(root), specs, True, True)
  seen: Dict[Tuple[str, str], int] = {}
  for i, spec in enumerate(specs):
    if spec is None:
      raise TypeError(
          "pax found a leaf outside any module attribute; pass modules (or "
          "containers of modules) to pax functions.")
    key = (spec.bundle, spec.name)
    if key in seen:
      raise ValueError(
          f"Two leaves of the module tree map to the same Haiku name "
          f"`{spec.bundle}/{spec.name}`.\nFix: give one of the modules a "
          "distinct `name=`.")
    seen[key] = i
  trainable = tuple(s.trainable for s in specs)
  params_treedef = jax.tree_util.tree_structure(
      treedef.unflatten([0 if t else None for t in trainable]))
  info = TreeInfo(tuple(specs), trainable, params_treedef, all(trainable))
  _CACHE[treedef] = info
  if len(_CACHE) > _CACHE_SIZE:
    _CACHE.popitem(last=False)
  return info


def _roots(tree: Any) -> List[Any]:
  roots = [x for x in jax.tree_util.tree_leaves(tree, is_leaf=_is_module)
           if _is_module(x)]
  if len(roots) > 1:
    raise TypeError("Expected a single pax module.")
  return roots


def haiku_dicts(module: Any) -> Tuple[Dict[str, Dict[str, Any]],
                                      Dict[str, Dict[str, Any]]]:
  """`(params, state)` of `module` as Haiku two-level dicts."""
  leaves, treedef = jax.tree_util.tree_flatten(module)
  info = tree_info(treedef, leaves)
  params: Dict[str, Dict[str, Any]] = {}
  state: Dict[str, Dict[str, Any]] = {}
  for leaf, spec in zip(leaves, info.specs):
    out = params if spec.role == PARAMS else state
    out.setdefault(spec.bundle, {})[spec.name] = leaf
  return params, state


def update_from_haiku(module: Any, mapping: Mapping[str, Mapping[str, Any]],
                      role: str) -> Any:
  """Returns `module` with its `role` leaves taken from a Haiku mapping.

  The mapping must hold exactly the module's `role` entries, with the same
  shapes; otherwise the error names the first differing path.
  """
  leaves, treedef = jax.tree_util.tree_flatten(module)
  info = tree_info(treedef, leaves)
  expected = {(s.bundle, s.name): i for i, s in enumerate(info.specs)
              if s.role == role}
  what = "params" if role == PARAMS else "state"
  given = {}
  for bundle in mapping:
    inner = mapping[bundle]
    if not hasattr(inner, "keys"):
      raise TypeError(
          f"{what}[{bundle!r}] should be a mapping name -> array, got "
          f"{type(inner).__name__}. Haiku {what} are two-level: "
          "{module_path: {name: array}}.")
    for name in inner:
      given[(bundle, name)] = inner[name]
  for key in sorted(expected):
    if key not in given:
      raise ValueError(
          f"The Haiku {what} mapping has no entry {what}[{key[0]!r}][{key[1]!r}] "
          f"that the module needs (module {what} are: {_keys(expected)}).\n"
          f"Fix: pass a mapping with the same keys as `module.{what}`.")
  for key in given:
    if key not in expected:
      raise ValueError(
          f"The Haiku {what} mapping has an entry {what}[{key[0]!r}][{key[1]!r}] "
          f"that the module does not have (module {what} are: "
          f"{_keys(expected)}).\nFix: pass a mapping with the same keys as "
          f"`module.{what}`.")
  new = list(leaves)
  for key, i in expected.items():
    value = given[key]
    old_shape = getattr(leaves[i], "shape", None)
    shape = getattr(value, "shape", None)
    if shape is not None and old_shape is not None and tuple(shape) != tuple(old_shape):
      raise ValueError(
          f"{what}[{key[0]!r}][{key[1]!r}] has shape {tuple(shape)} but the "
          f"module expects {tuple(old_shape)}.\nFix: load weights of the "
          "same architecture (check layer sizes).")
    old_dtype = getattr(leaves[i], "dtype", None)
    dtype = getattr(value, "dtype", None)
    if old_dtype is not None and dtype is not None and dtype != old_dtype:
      raise ValueError(
          f"{what}[{key[0]!r}][{key[1]!r}] has dtype {dtype} but the module "
          f"expects {old_dtype}.\nFix: cast first, e.g. "
          f"`jax.tree_util.tree_map(lambda x: x.astype(jnp.{old_dtype}), "
          f"{what})`.")
    new[i] = value
  return treedef.unflatten(new)


def _keys(expected: Mapping[Tuple[str, str], int]) -> str:
  items = sorted(f"{b}/{n}" for b, n in expected)
  if len(items) > 6:
    items = items[:6] + ["..."]
  return ", ".join(items)


def _show(value: Any) -> str:
  name = getattr(value, "__name__", None)
  if callable(value) and isinstance(name, str):
    return f"the function `{name}`"
  text = repr(value)
  return text if len(text) <= 80 else text[:77] + "..."


def _static_difference(a: Any, b: Any, path: str) -> Optional[str]:
  """Names the first static attribute where two same-leaf trees differ."""
  if _is_module(a) and _is_module(b):
    if type(a) is not type(b):
      return (f"`{path or '(root)'}` is a {type(a).__name__} in the first "
              f"tree and a {type(b).__name__} in the second")
    a_fields = module_layout.field_values(a)
    b_fields = module_layout.field_values(b)
    for name in list(a_fields) + [n for n in b_fields if n not in a_fields]:
      if name not in a_fields or name not in b_fields:
        which = "second" if name not in a_fields else "first"
        return f"only the {which} tree has the attribute `{path}.{name}`"
      va, vb = a_fields[name], b_fields[name]
      found = _static_difference(va, vb, f"{path}.{name}")
      if found:
        return found
    return None
  if isinstance(a, (list, tuple)) and type(a) is type(b) and len(a) == len(b):
    for i, (va, vb) in enumerate(zip(a, b)):
      found = _static_difference(va, vb, f"{path}[{i}]")
      if found:
        return found
    return None
  if isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys():
    for k in a:
      found = _static_difference(a[k], b[k], f"{path}[{k!r}]")
      if found:
        return found
    return None
  if isinstance(a, (jax.Array, np.ndarray)) or isinstance(
      b, (jax.Array, np.ndarray)):
    return None  # Array data: compared by path and shape elsewhere.
  try:
    same = bool(a == b)
  except Exception:  # pylint: disable=broad-except
    same = a is b
  if not same:
    return (f"the static value `{path}` is {_show(a)} in the first tree and "
            f"{_show(b)} in the second")
  return None


def first_difference(a: Any, b: Any) -> str:
  """Describes the first place where the pytrees `a` and `b` differ.

  A leaf path present in only one tree comes first ("the first tree has an
  extra leaf at `.bias`"), then a None (frozen) leaf on one side only, then
  the leaf order, then the first static attribute that differs.
  """
  is_none = lambda x: x is None
  a_flat = jax.tree_util.tree_flatten_with_path(a, is_leaf=is_none)[0]
  b_flat = jax.tree_util.tree_flatten_with_path(b, is_leaf=is_none)[0]
  a_leaves = {jax.tree_util.keystr(p): x for p, x in a_flat}
  b_leaves = {jax.tree_util.keystr(p): x for p, x in b_flat}
  for which, mine, other in (("first", a_leaves, b_leaves),
                             ("second", b_leaves, a_leaves)):
    for path in mine:
      if path not in other:
        return f"the {which} tree has an extra leaf at `{path}`"
  for path, x in a_leaves.items():
    if (x is None) != (b_leaves[path] is None):
      return (f"at `{path}` one side is None (not trainable) and the other "
              "is not")
  for pa, pb in zip(a_leaves, b_leaves):
    if pa != pb:
      return (f"the same leaves in another order: `{pa}` in the first tree "
              f"where the second has `{pb}`")
  found = _static_difference(a, b, "")
  if found:
    return found
  ta, tb = jax.tree_util.tree_structure(a), jax.tree_util.tree_structure(b)
  return f"static fields or node types differ:\n  {ta}\nvs\n  {tb}"
